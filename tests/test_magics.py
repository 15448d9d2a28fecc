"""``%%task`` and ``%tasklab`` through a real IPython shell, with real workers."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError

import tasklab
from tasklab.code.store import CODE_KEY, TASKS_KEY
from tasklab.lab import current_lab_or_none
from tasklab.notebook.magics import TaskLabMagics

from .conftest import run_cell, task_cell


def test_public_functions_and_task_classes_become_tasks(shell, lab, capsys):
    shell.user_ns["tasklab"] = tasklab
    task_cell(
        shell,
        """
import math
import tasklab

def area(r):
    return math.pi * r * r

def _helper(x):
    return x

class Cube(tasklab.Task):
    def run(self, x):
        return x ** 3

class WithDb(tasklab.Task):
    pass
""",
    )
    ns = shell.user_ns
    assert isinstance(ns["area"], tasklab.Task)
    assert not isinstance(ns["_helper"], tasklab.Task), "private functions stay plain functions"
    assert ns["area"](1) == pytest.approx(3.14159, rel=1e-4), "calling a task runs it locally"
    assert "tasks: area, Cube" in capsys.readouterr().out
    lab.workers(1)
    assert ns["area"].delay(2).get(timeout=10) == pytest.approx(12.566, rel=1e-3)
    assert ns["Cube"].delay(3).get(timeout=10) == 27
    assert ns["Cube"]().delay(2).get(timeout=10) == 8
    with pytest.raises(tasklab.NotRegistered, match="base class"):
        ns["WithDb"]().delay()


def test_help_lists_the_options():
    doc = TaskLabMagics.task.__doc__
    for option in ("--name", "--queue", "--base", "--bind", "--max-retries", "--autoretry-for", "--retry-backoff",
                   "--retry-backoff-max", "--no-retry-jitter", "--time-limit", "--soft-time-limit", "--rate-limit",
                   "--acks-late", "--ignore-result", "--result-ttl"):  # fmt: skip
        assert option in doc


def test_registration_does_not_connect(server, monkeypatch, capsys):
    """The embedded server and workers start at the first submit, which prints one line."""
    from IPython.core.interactiveshell import InteractiveShell

    lab = current_lab_or_none()
    if lab is not None:
        lab.shutdown()
    monkeypatch.setenv("TASKLAB_DATA_DIR", str(server.data_dir))
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("tasklab")
    task_cell(ip, "def double(x):\n    return 2 * x\n")
    assert current_lab_or_none() is None, "%%task must not connect"
    capsys.readouterr()
    try:
        assert run_cell(ip, "double.delay(21).get(timeout=20)") == 42
        out = capsys.readouterr().out.strip().splitlines()
        started = [line for line in out if line.startswith("tasklab:")]
        assert len(started) == 1 and server.url in started[0] and "local workers" in started[0]
    finally:
        lab = current_lab_or_none()
        if lab is not None:
            lab.shutdown()


def test_tasklab_line_magic(shell, lab, capsys):
    shell.run_line_magic("tasklab", "workers 2")
    assert len(lab.pool) == 2
    shell.run_line_magic("tasklab", "status")
    out = capsys.readouterr().out
    assert "workers (2)" in out and lab.url in out
    shell.run_line_magic("tasklab", "workers 1")
    assert len(lab.pool) == 1
    with pytest.raises(UsageError, match="Unknown or incomplete"):
        shell.run_line_magic("tasklab", "frobnicate")
    with pytest.raises(UsageError, match="Cannot reach Redis"):
        shell.run_line_magic("tasklab", "connect redis://127.0.0.1:1/0")


def test_connect_and_stop(shell, server, capsys):
    shell.run_line_magic("tasklab", f"connect {server.url} --namespace other")
    lab = current_lab_or_none()
    assert lab is not None and lab.namespace == "other" and lab.url == server.url
    shell.run_line_magic("tasklab", "stop")
    assert current_lab_or_none() is None
    assert "stopped" in capsys.readouterr().out


def test_unload_removes_the_magics(shell):
    shell.run_line_magic("unload_ext", "tasklab")
    assert "task" not in shell.magics_manager.magics["cell"]
    assert "tasklab" not in shell.magics_manager.magics["line"]
    shell.run_line_magic("load_ext", "tasklab")
    assert "task" in shell.magics_manager.magics["cell"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus 1", "unrecognized arguments"),
        ("--max-retries -5", "whole number"),
        ("--rate-limit 10/x", "a rate such as '10/m'"),
        ("--time-limit 0", r"number of seconds > 0"),
        ("--queue 'two words'", "a queue name of letters"),
        ("--result-ttl -5", "whole number"),
        ("--autoretry-for NoSuchError", "not an exception class"),
    ],
)
def test_bad_options_are_refused(shell, line, message):
    with pytest.raises(UsageError, match=message):
        task_cell(shell, "def f(x):\n    return x\n", line)
    assert "f" not in shell.user_ns, "a refused cell registers nothing and does not run"


def test_name_option_needs_one_function(shell, lab):
    with pytest.raises(UsageError, match="names one task"):
        task_cell(shell, "def a():\n    pass\ndef b():\n    pass\n", "--name both")
    task_cell(shell, "def a():\n    return 'a'\n", "--name renamed")
    assert shell.user_ns["a"].name == "renamed"
    assert lab.registry.current(lab.namespace)["renamed"] == shell.user_ns["a"]._tl_version


def test_names_the_notebook_lacks_are_reported_with_the_fix(shell):
    run_cell(shell, "import json as js\nfrom os.path import join\ndef helper(x):\n    return x\n")
    with pytest.raises(UsageError) as info:
        task_cell(shell, "def f(x):\n    return js.dumps(join('a', x)) + helper(x) + nowhere + elsewhere\n")
    message = str(info.value)
    assert "`nowhere` is used in `f` but not defined in this cell or the notebook: define `nowhere`" in message
    assert "`elsewhere` is used in `f`" in message
    assert "`js`" not in message and "`helper`" not in message, "what the notebook has travels with the cell"
    assert not isinstance(shell.user_ns.get("f"), tasklab.Task)


def test_a_syntax_error_fails_the_cell(shell, capfd):
    result = shell.run_cell("%%task\ndef broken(:\n    pass\n")
    assert not result.success and isinstance(result.error_in_exec, SyntaxError), "Run All stops here"
    captured = capfd.readouterr()
    assert "SyntaxError" in captured.out + captured.err
    assert "broken" not in shell.user_ns


def test_a_comment_after_a_magic_is_left_out(shell, lab, capsys):
    assert shell.run_cell("%tasklab status   # the server, its queues and workers").success
    assert "Redis" in capsys.readouterr().out
    assert shell.run_cell("%%task --queue io  # where its jobs go\ndef routed():\n    return 1\n").success
    assert shell.user_ns["routed"].queue == "io"
    unclosed = shell.run_cell('%%task --name "half\ndef f():\n    return 1\n')
    assert not unclosed.success and "Close the quote" in str(unclosed.error_in_exec)


def test_a_tasklab_error_in_a_cell_is_one_short_message(shell, lab, capsys):
    task_cell(shell, "def takes(x):\n    return x\n")
    capsys.readouterr()
    result = shell.run_cell("import threading\nlock = threading.Lock()\nr = takes.delay(lock)\n")
    assert isinstance(result.error_in_exec, tasklab.SerializationError), "the cell failed"
    shown = capsys.readouterr().out
    assert shown.startswith("SerializationError: Cannot submit takes")
    assert "line 3: r = takes.delay(lock)" in shown and "%tb" in shown
    assert len(shown.strip().splitlines()) == 3, shown
    assert "Traceback" not in shown and "cloudpickle" not in shown
    shell.run_line_magic("tb", "")
    assert "Traceback" in capsys.readouterr().out, "%tb shows the whole traceback"


def test_code_is_stored_by_content_and_current_version_moves(shell, lab):
    task_cell(shell, "def v():\n    return 1\n")
    first = shell.user_ns["v"]._tl_version
    task_cell(shell, "def v():\n    return 2\n")
    second = shell.user_ns["v"]._tl_version
    task_cell(shell, "def v():\n    return 2\n")
    assert shell.user_ns["v"]._tl_version == second, "the same source is the same version"
    assert first != second
    assert lab.connection.hget(TASKS_KEY.format(lab.namespace), "v").decode() == second
    assert lab.connection.exists(CODE_KEY.format(first)), "old versions stay in Redis"


def test_queue_option_routes_jobs(shell, lab):
    lab.workers(1, queues=["default", "io"])
    task_cell(shell, "def where():\n    return 'here'\n", "--queue io")
    result = shell.user_ns["where"].delay()
    assert result.get(timeout=10) == "here"
    assert lab.queue("io").fetch_job(result.id).origin == "io"
    assert shell.user_ns["where"].apply_async(queue="default").get(timeout=10) == "here"


def test_result_html_shows_state(shell, lab):
    lab.workers(1)
    task_cell(shell, "def ok():\n    return 1\n")
    result = shell.user_ns["ok"].delay()
    result.get(timeout=10)
    html = result._repr_html_()
    assert "SUCCESS" in html and result.id in html and "ok" in html


def test_connect_output_hides_the_password(shell, tmp_path, capsys):
    from tasklab.local.server import EmbeddedServer

    protected = EmbeddedServer(tmp_path / "protected").start()
    protected._lease.config_set("requirepass", "s3cret")
    try:
        shell.run_line_magic("tasklab", f"connect unix://:s3cret@{protected.socket_path} --namespace secret")
        out = capsys.readouterr().out
        assert "connected to" in out and "s3cret" not in out and "***" in out
        shell.run_line_magic("tasklab", "stop")
    finally:
        protected._lease.config_set("requirepass", "")
        protected.stop()


def test_a_cell_of_base_classes_says_so(shell, capsys):
    task_cell(shell, "import tasklab\n\nclass Base(tasklab.Task):\n    pass\n")
    assert "base classes: Base" in capsys.readouterr().out


def test_plots_display_as_images_once_loaded(shell):
    from tasklab.diagnostics.plots import throughput

    empty = pd.DataFrame(columns=["submitted_at", "started_at", "finished_at"])
    data, _ = shell.display_formatter.format(throughput(empty))
    assert data["image/png"][:4] == b"\x89PNG"


def test_local_workers_serve_every_queue_the_lab_s_tasks_use(shell, lab, capsys):
    pool = lab.workers(1)
    task_cell(shell, "def custom():\n    return 'served'\n", "--queue custom_queue")
    assert shell.user_ns["custom"].delay().get(timeout=20) == "served"
    assert "custom_queue" in pool.queues and "now serve" in capsys.readouterr().out
    assert len(pool) == 1


def test_a_job_for_a_queue_no_worker_serves_is_warned_about(shell, lab):
    lab.workers(1, queues=["default"])  # pinned: the local workers serve these only
    task_cell(shell, "def elsewhere():\n    return 1\n", "--queue gpu")
    with pytest.warns(tasklab.TaskLabWarning, match="No worker serves the queue 'gpu'.*--queues gpu"):
        shell.user_ns["elsewhere"].delay()


def test_task_help_lists_every_option_with_its_default(shell):
    from tasklab.core import options as opts

    help_text = shell.find_cell_magic("task").__doc__
    words = " ".join(help_text.split())
    assert words.startswith(":: %%task ") or "%%task [" in words, help_text[:200]
    assert "<" not in help_text, "metavars as written, not wrapped in <…>"
    for name, option in opts.HELP.items():
        flag = ("--no-" if opts.DEFAULTS[name] is True and option.metavar is None else "--") + name.replace("_", "-")
        assert flag in words, flag
        assert " ".join(f"{option.text} (default: {opts.default_text(name)})".split()) in words, name
    assert "--retry-backoff [SECONDS]" in words and "--rate-limit RATE" in words
    assert set(opts.HELP) == set(opts.DEFAULTS), "one table: every option has its help and its flag"


def test_option_values_are_read_as_written(shell, lab):
    task_cell(shell, "def f():\n    return 1\n", "--name 'é_tâche' --queue \"io\"")
    assert shell.user_ns["f"].name == "é_tâche" and shell.user_ns["f"].queue == "io", "quotes taken off once"
