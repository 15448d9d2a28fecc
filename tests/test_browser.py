"""The monitor in a real browser: JupyterLab runs a notebook that opens it, Chromium shows it.

The headless tests in ``test_monitor.py`` check the widget's traits; only a browser shows that
ipywidgets' JupyterLab extension renders them and that the thread's updates reach the page.
Chromium is Debian's (``.ci/browser-setup.sh`` installs it), driven by Playwright's driver;
``playwright install`` is never needed. JupyterLab gets its own root, config, data, runtime,
settings and workspace directories, and the notebook's kernel its own tasklab data directory, so
the developer's Jupyter setup and ``.tasklab`` are neither used nor changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import pid_alive, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # the machine's network is closed: no requests to Google
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SETUP_HINT = "the README's test command installs it (.ci/test-deps.sh: apt-get install chromium)"


def require(found: object, what: str) -> None:
    """Skip when ``what`` is missing on a developer's machine; fail in CI, where it must be there."""
    if found:
        return
    reason = f"{what} is not installed; {SETUP_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture
def chromium() -> str:
    """The system Chromium, and Playwright to drive it (checked before JupyterLab is started)."""
    path = find_chromium()
    require(path, "chromium")
    require(importlib.util.find_spec("playwright"), "playwright")
    return path  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_with_env(entry: str) -> list[int]:
    """Pids of live processes whose environment holds ``entry`` (``NAME=value``)."""
    needle = entry.encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + environ and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@dataclass
class JupyterLab:
    url: str
    token: str
    root: Path
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[JupyterLab]:
    """JupyterLab on a free port of 127.0.0.1, isolated in ``tmp_path``; stopped with all it started.

    Kernels inherit the server's environment, so ``TASKLAB_DATA_DIR`` gives the notebook its own
    embedded Redis; every process that carries that variable must be gone at the end.
    """
    require(importlib.util.find_spec("jupyterlab"), "jupyterlab")
    dirs = {name: tmp_path / name for name in ("root", "tasklab-data", "config", "data", "runtime", "ipython",
                                              "settings", "workspaces")}  # fmt: skip
    for path in dirs.values():
        path.mkdir()
    notification = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    marker = f"TASKLAB_DATA_DIR={dirs['tasklab-data']}"
    env = {
        **os.environ,
        "TASKLAB_DATA_DIR": str(dirs["tasklab-data"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
    }
    token, port = secrets.token_hex(16), free_port()
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
        "--ServerApp.terminals_enabled=False",
        # Nothing from the internet: no news, no update check, no extension listing from PyPI.
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={dirs['settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]  # fmt: skip
    log = tmp_path / "jupyterlab.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            command, cwd=dirs["root"], env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    lab = JupyterLab(f"http://127.0.0.1:{port}", token, dirs["root"], log)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{lab.url}/api/status", token):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start (exit status {server.poll()}):\n{lab.log_tail()}")
            time.sleep(0.1)
        yield lab
    finally:
        server.send_signal(signal.SIGTERM)  # shuts its kernels down, whose workers and Redis follow
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        deadline = time.monotonic() + 15
        while processes_with_env(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = processes_with_env(marker)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes outlived JupyterLab: {left}"


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells], metadata={"kernelspec": kernelspec}), path)


TASK_CELL = """\
%%task
import time
from pathlib import Path

def square(x):
    return x * x

def after_gate(x, gate):
    while not Path(gate).exists():
        time.sleep(0.05)
    return x

def short(i):
    time.sleep(0.2)
    return i

def boom():
    raise ZeroDivisionError("boom")
"""

#: Once the test opens its second gate: 50 short tasks and a failing one, then a report of the task
#: stream as the kernel drew it: marks drawn apart, where each lane's middle is, and where the failed
#: attempt is (fractions of the figure, from its top left).
BATCH_CELL = """\
import json, time
from pathlib import Path
while not Path({gate!r}).exists():
    time.sleep(0.05)
shorts, failing = [short.delay(i) for i in range(50)], boom.delay()
[result.get(timeout=120) for result in shorts]
failing.get(timeout=60, propagate=False)
monitor.refresh(plots=True)
marks = monitor.stream_marks
fig = monitor.stream_canvas.figure
ax, (width, height) = fig.axes[0], fig.canvas.get_width_height()
def where(x, y):
    px, py = ax.transData.transform((x, y))
    return px / fig.bbox.width, 1 - py / fig.bbox.height
apart = sum(1 + int((lane["left"].to_numpy()[1:] > lane["right"].to_numpy()[:-1]).sum())
            for _, lane in marks.sort_values("left").groupby("lane"))
bad = marks[marks["state"] == "FAILURE"].iloc[0]
print("STREAM-REPORT " + json.dumps({{
    "apart": apart, "short": int((marks["name"] == "short").sum()), "failed_id": bad["task_id"],
    "lanes": [where(0, lane)[1] for lane in sorted(marks["lane"].unique())],
    "x_range": [where(ax.get_xlim()[0], 0)[0], where(ax.get_xlim()[1], 0)[0]],
    "failed_at": where((bad["left"] + bad["right"]) / 2, bad["lane"]),
}}))
"""


def test_monitor_renders_live_counts_in_jupyterlab(chromium, jupyter_lab, tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    gate, batch_gate = tmp_path / "release-more-tasks", tmp_path / "release-the-batch"
    write_notebook(
        jupyter_lab.root / "monitor.ipynb",
        [
            "%load_ext tasklab\nimport tasklab",
            TASK_CELL,
            "rs = square.map_async(range(5))\nrs.get(timeout=60)",
            "monitor = tasklab.monitor()",
            # Three more tasks, held until the browser has shown the first five successes.
            f"import tasklab\nmore = [after_gate.delay(i, {str(gate)!r}) for i in range(3)]",
            BATCH_CELL.format(gate=str(batch_gate)),
        ],
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1600})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{jupyter_lab.url}/lab/tree/monitor.ipynb?token={jupyter_lab.token}")
            # The toolbar's indicator says "idle" before a kernel exists; the status bar names the kernel.
            page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            count = MonitorCounts(page)
            count.wait("SUCCESS", lambda n: n == 5, 60, "the five tasks of the notebook")
            count.wait("STARTED", lambda n: n > 0, 30, "the held tasks to start")
            assert count("SUCCESS") == 5, "the held tasks must not have finished yet"
            gate.touch()
            count.wait("SUCCESS", lambda n: n == 8, 30, "the monitor to show the three later successes")

            monitor = page.locator(".jp-OutputArea-output", has=count.locator("SUCCESS"))
            plots_shown = "images => images.filter(i => i.clientWidth > 0).every(i => i.naturalWidth > 0)"
            wait_for(lambda: monitor.locator("img").evaluate_all(plots_shown), 30, "the monitor's plots to render")

            batch_gate.touch()  # 50 short tasks and a failing one
            count.wait("STARTED", lambda n: n == 2, 60, "the short tasks to run on both workers")
            wait_for(lambda: "waiting" in monitor.locator("table").first.inner_text(), 10, "their progress bar")
            monitor.screenshot(path=tmp_path / "monitor-during-run.png")
            count.wait("SUCCESS", lambda n: n == 58, 120, "the 50 short tasks")
            count.wait("FAILURE", lambda n: n == 1, 60, "the failing task")
            report = page.locator(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']", has_text="STREAM-REPORT"
            )
            report.wait_for(timeout=60_000)
            stream = json.loads(report.inner_text().split("STREAM-REPORT ", 1)[1].strip().splitlines()[0])
            assert stream["short"] == 50 and stream["apart"] >= 50, stream
            canvas = monitor.locator(".jupyter-matplotlib-figure canvas").first
            wait_for(lambda: canvas.evaluate(COLOURED_RUNS, stream) >= 40, 30, "the stream to show 40 marks apart")
            # Every plot has at least as many pixels as it is shown with: nothing is scaled up.
            # The images shown (the stream's stand-in image is gone once its canvas is set up).
            sizes = monitor.locator("img").evaluate_all(
                "images => images.filter(i => i.clientWidth > 0)"
                ".map(i => [i.naturalWidth, i.naturalHeight, i.clientWidth, i.clientHeight])"
            )
            assert len(sizes) == 2, sizes
            sizes.append(canvas.evaluate("c => [c.width, c.height, c.clientWidth, c.clientHeight]"))
            assert all(nw >= cw > 0 and nh >= ch > 0 for nw, nh, cw, ch in sizes), sizes
            monitor.screenshot(path=tmp_path / "monitor.png")
            # A click on the failed attempt selects it: what it was, and its traceback.
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            x, y = stream["failed_at"]
            page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
            selected = monitor.locator(".widget-html-content", has_text="selected:")
            wait_for(lambda: stream["failed_id"][:8] in selected.inner_text(), 30, "the clicked attempt's details")
            wait_for(lambda: "ZeroDivisionError: boom" in monitor.inner_text(), 30, "the attempt's traceback")
            canvas.scroll_into_view_if_needed()
            shot = tmp_path / "monitor-task-stream.png"
            monitor.screenshot(path=shot)
            page.screenshot(path=tmp_path / "jupyterlab.png")
            # Stopped, the monitor says so and greys its controls; restarted, it runs again.
            buttons = {name: monitor.get_by_role("button", name=name, exact=True)
                       for name in ("stop monitor", "restart monitor", "revoke", "+ worker")}  # fmt: skip
            stopped = monitor.get_by_text("monitor stopped at")

            def controls(enabled: bool) -> bool:
                return all(buttons[name].is_enabled() == enabled for name in ("stop monitor", "revoke", "+ worker"))

            assert buttons["restart monitor"].is_disabled() and controls(enabled=True) and stopped.count() == 0
            buttons["stop monitor"].click()
            # The kernel sets the controls' states, then the header: once the header says so, all are set.
            stopped.wait_for(timeout=30_000)
            assert controls(enabled=False) and buttons["restart monitor"].is_enabled()
            buttons["restart monitor"].click()
            wait_for(lambda: stopped.count() == 0, 30, "the restarted monitor's header")
            assert controls(enabled=True) and buttons["restart monitor"].is_disabled()
        except BaseException:  # pytest.fail's exception too
            with contextlib.suppress(Exception):
                page.screenshot(path=tmp_path / "failure.png")
            print(f"screenshot: {tmp_path / 'failure.png'}\nJupyterLab log:\n{jupyter_lab.log_tail()}")
            raise
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nmonitor screenshot: {shot}")


#: How many separate coloured runs the browser's canvas shows along each lane's middle (a mark's
#: colour is neither white, grey nor black); its argument is the kernel's report of the stream.
COLOURED_RUNS = """(canvas, stream) => {
  const context = canvas.getContext("2d");
  let runs = 0;
  for (const lane of stream.lanes) {
    const y = Math.round(lane * canvas.height);
    const x0 = Math.round(stream.x_range[0] * canvas.width) + 2, x1 = Math.round(stream.x_range[1] * canvas.width) - 2;
    const row = context.getImageData(x0, y, x1 - x0, 1).data;
    let inside = false;
    for (let i = 0; i < row.length; i += 4) {
      const spread = Math.max(row[i], row[i + 1], row[i + 2]) - Math.min(row[i], row[i + 1], row[i + 2]);
      const coloured = spread > 38;
      if (coloured && !inside) runs += 1;
      inside = coloured;
    }
  }
  return runs;
}"""


class MonitorCounts:
    """Reads the monitor's state counts as the browser renders them: the badge, then the count."""

    def __init__(self, page: Page):
        self.page = page

    def locator(self, state: str) -> Locator:
        return self.page.locator(
            f"xpath=//div[contains(@class, 'widget-html-content')]/span/span[normalize-space() = '{state}']"
            "/following-sibling::b[1]"
        )

    def __call__(self, state: str) -> int | None:
        found = self.locator(state)
        return int(found.inner_text()) if found.count() == 1 else None

    def wait(self, state: str, ok: Callable[[int], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            value = self(state)
            if value is not None and ok(value):
                return
            stderr = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [text for text in stderr.all_inner_texts() if "Traceback" in text]
            if tracebacks:
                pytest.fail(f"a notebook cell failed:\n{tracebacks[0]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; {state} shows {value}")
            time.sleep(0.1)
