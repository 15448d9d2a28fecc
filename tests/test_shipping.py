"""Shipping that keeps its meaning (issue 15): tasks of scripts, ``%%task`` cells and local modules
reach the workers as they were defined: with their names and options, their own exception classes,
one class object per shipped version, and the decorators they were written with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tasklab

from .conftest import run_cell, task_cell

SCRIPT = Path(__file__).with_name("shipping_script.py")


@pytest.fixture(scope="module")
def script_outcomes(server, tmp_path_factory) -> dict[str, dict]:
    """Run tests/shipping_script.py once (its tasks are in ``__main__``, so they ship by source) on the
    session's Redis, with its own worker; each case's outcome by name."""
    cwd = tmp_path_factory.mktemp("script")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), server.url], capture_output=True, text=True, timeout=180, cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    return {line["case"]: line for line in map(json.loads, out.stdout.splitlines())}


# -- 1. the version covers everything that defines a task --


def test_identical_bodies_with_other_names_are_other_tasks(script_outcomes):
    assert script_outcomes["alpha"]["value"] == ["alpha", 1]
    assert script_outcomes["beta"]["value"] == ["beta", 1], "the second name reaches the workers"
    alpha, beta, beta_again = script_outcomes["versions"]["value"]
    assert len({alpha, beta, beta_again}) == 3


def test_identical_bodies_with_other_options_are_other_versions(script_outcomes):
    assert script_outcomes["beta_again"]["value"] == ["beta", 4], "the worker runs the task with its own options"


def test_cell_tasks_with_other_options_are_other_versions(shell, lab):
    lab.workers(1)
    task_cell(shell, "def echo(self):\n    return [self.name, self.max_retries]\n", "--bind --max-retries 1")
    first = shell.user_ns["echo"]
    task_cell(shell, "def echo(self):\n    return [self.name, self.max_retries]\n", "--bind --max-retries 6")
    second = shell.user_ns["echo"]
    assert first._tl_version != second._tl_version
    assert first.delay().get(timeout=10) == ["echo", 1], "a job keeps the version it was submitted with"
    assert second.delay().get(timeout=10) == ["echo", 6]


# -- 2. exception classes written beside a task come back as themselves --


def test_a_script_exception_class_comes_back_as_itself(script_outcomes):
    outcome = script_outcomes["over_quota"]
    assert outcome["raised"] == "__main__.QuotaExceeded" and outcome.get("is_own_class")
    assert outcome["message"].startswith("7 is over the quota")


def test_an_exception_class_of_an_earlier_cell_comes_back_as_itself(shell, lab):
    lab.workers(1)
    run_cell(shell, "class QuotaExceeded(Exception):\n    pass\n")
    task_cell(shell, "def over_quota(n):\n    raise QuotaExceeded(f'{n} is over')\n")
    run_cell(
        shell,
        "try:\n    over_quota.delay(3).get(timeout=10)\nexcept QuotaExceeded as exc:\n    caught = str(exc)\n",
    )
    assert shell.user_ns["caught"] == "3 is over"


def test_an_exception_class_of_the_task_cell_comes_back_as_itself(shell, lab):
    lab.workers(1)
    task_cell(shell, "class Refused(Exception):\n    pass\n\ndef refuse(n):\n    raise Refused(n)\n")
    with pytest.raises(shell.user_ns["Refused"]):
        shell.user_ns["refuse"].delay(1).get(timeout=10)


# -- 3. one class object per shipped version --


def test_a_value_pickled_by_value_shares_the_body_s_class(script_outcomes):
    assert script_outcomes["handled"]["value"] == "handled", "the body's except matches what the value raises"
    assert script_outcomes["same_class"]["value"] is True


def test_autoretry_for_matches_the_class_the_body_raises(script_outcomes):
    assert script_outcomes["raises_directly"]["value"] == "retried 1"
    assert script_outcomes["autoretried"]["value"] == "fetched at attempt 1"


CELL_SOURCE = """
class Flaky(Exception):
    pass

class Source:
    def fetch(self, attempt):
        if attempt < 1:
            raise Flaky(f"attempt {attempt}")
        return f"fetched at attempt {attempt}"

SOURCE = Source()
"""

HANDLED = """
def handled():
    try:
        return SOURCE.fetch(0)
    except Flaky:
        return "handled"
"""


def test_one_class_per_version_for_cell_tasks(shell, lab):
    lab.workers(1)
    run_cell(shell, CELL_SOURCE)
    # The first cell to use Flaky carries it: its autoretry_for must name the class its body meets.
    task_cell(shell, "def fetch(self):\n    return SOURCE.fetch(self.request.retries)\n",
              "--bind --autoretry-for Flaky --max-retries 2 --default-retry-delay 0")  # fmt: skip
    task_cell(shell, HANDLED)
    task_cell(shell, "def same():\n    return isinstance(SOURCE, Source)\n")
    assert shell.user_ns["handled"].delay().get(timeout=10) == "handled"
    assert shell.user_ns["fetch"].delay().get(timeout=10) == "fetched at attempt 1"
    assert shell.user_ns["same"].delay().get(timeout=10) is True


def test_arguments_and_results_of_a_notebook_class_are_that_class_on_both_sides(shell, lab):
    lab.workers(1)
    run_cell(shell, "class Point:\n    def __init__(self, x):\n        self.x = x\n")
    task_cell(shell, "def moved(p):\n    assert isinstance(p, Point), type(p)\n    return Point(p.x + 1)\n")
    run_cell(shell, "result = moved.delay(Point(1)).get(timeout=10)")
    assert isinstance(shell.user_ns["result"], shell.user_ns["Point"]) and shell.user_ns["result"].x == 2


# -- 4. decorators below the task's own --


def test_a_task_keeps_the_decorators_below_its_own(script_outcomes):
    assert script_outcomes["decorated_here"]["value"] == ["outer", 7]
    assert script_outcomes["decorated"]["value"] == ["outer", 7], "the worker runs the decorated function"


def test_a_wrapper_the_workers_cannot_rebuild_is_refused_when_made_a_task(script_outcomes):
    message = script_outcomes["refused_at_decoration"]["value"]
    assert "Write the decorators above its def, below the task's" in message


def test_a_decorator_the_workers_cannot_rebuild_is_refused_with_the_fix(lab):
    import functools

    def plain(x):
        return x

    @lab.task
    def closure_task(x):
        return x + len(locals_only)

    locals_only = [1]
    with pytest.raises(tasklab.CellError, match="reads locals_only from the function it is defined in"):
        closure_task.delay(1)

    wrapped = lab.task(functools.lru_cache(maxsize=None)(plain))
    with pytest.raises(tasklab.CellError, match="Write the decorators above its def"):
        wrapped.delay(1)


# -- 5. local modules ship whole, by source; 6. their tasks are named as Celery names them --

HELPERS_PY = '''
class Refused(Exception):
    """Raised by the local module's tasks: it must come back as itself."""


def shout(word):
    return word.upper() + "!"
'''

MYTASKS_PY = """
import functools

import tasklab

from helpers import Refused, shout

CALLS = {"count": 0}


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return {"logged": fn(*args)}

    return wrapper


@tasklab.task
def add(a, b):
    return a + b


@tasklab.task(bind=True)
@logged
def greet(self, word):
    return [self.name, shout(word)]


@tasklab.task
def refuse(why):
    raise Refused(why)


class Power(tasklab.Task):
    def run(self, x, n):
        return x**n


def plain(x):
    return ("plain", x)
"""

PACKAGE = {
    "__init__.py": "from .jobs import tripled\n",
    "jobs.py": "import tasklab\n\nfrom .util import triple\n\n\n@tasklab.task\ndef tripled(x):\n    return triple(x)\n",
    "util.py": "def triple(x):\n    return [x] * 3\n",
}

CLIENT_PY = """
import json
import sys

import tasklab

import mytasks
from helpers import Refused
from pipeline import tripled

lab = tasklab.connect(sys.argv[1], autostart_workers=False)
outcomes = {
    "names": [mytasks.add.name, mytasks.greet.name, mytasks.Power.name],
    "add": mytasks.add.delay(2, 3).get(timeout=20),
    "greet": mytasks.greet.delay("hi").get(timeout=20),
    "power": mytasks.Power.delay(2, 5).get(timeout=20),
    "plain": lab.task(mytasks.plain, name="plain").delay(4).get(timeout=20),
    "versions": [mytasks.add._tl_version, mytasks.Power._tl_version],
    "package": [tripled.name, tripled.delay(2).get(timeout=20)],
    "current": sorted(n for n in lab.registry.current(lab.namespace) if n.startswith("mytasks.")),
}
try:
    mytasks.refuse.delay("no").get(timeout=20)
except Refused as exc:
    outcomes["refused"] = str(exc)
print(json.dumps(outcomes))
lab.shutdown()
"""


@pytest.fixture
def remote_worker(server, lab, tmp_path):
    """A ``tasklab worker`` started in a directory of its own, as on another host: it cannot import
    the modules next to the client."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasklab", "worker", "--url", server.url, "--processes", "1",
         "--log-dir", str(elsewhere / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=elsewhere,
    )  # fmt: skip
    try:
        assert "1 worker(s)" in proc.stdout.readline()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_local_module_ships_by_source_to_a_worker_that_cannot_import_it(server, lab, remote_worker, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text(HELPERS_PY)
    (project / "mytasks.py").write_text(MYTASKS_PY)
    (project / "client.py").write_text(CLIENT_PY)
    (project / "pipeline").mkdir()
    for name, text in PACKAGE.items():
        (project / "pipeline" / name).write_text(text)
    out = subprocess.run(
        [sys.executable, "client.py", server.url], capture_output=True, text=True, timeout=120, cwd=project
    )
    assert out.returncode == 0, out.stderr
    outcomes = json.loads(out.stdout)
    assert outcomes["add"] == 5
    assert outcomes["greet"] == {"logged": ["mytasks.greet", "HI!"]}, "decorated, named, with its helper module"
    assert outcomes["power"] == 32
    assert outcomes["plain"] == ["plain", 4], "a plain function of the module, made a task where it is used"
    assert outcomes["refused"] == "no", "the module's exception class comes back as itself"
    assert outcomes["versions"][0] == outcomes["versions"][1], "one version: the module"
    assert not outcomes["versions"][0].startswith("py:")
    assert outcomes["package"] == ["pipeline.jobs.tripled", [2, 2, 2]], "a local package ships whole"
    assert outcomes["current"] == ["mytasks.Power", "mytasks.add", "mytasks.greet", "mytasks.refuse"], "by name"


def test_tasks_of_modules_are_named_as_celery_names_them(shell, lab):
    from . import shipped_tasks

    lab.workers(1, queues=["default", "maths"])
    assert shipped_tasks.add.name == "tests.shipped_tasks.add"
    assert shipped_tasks.Multiply.delay(2, 3).get(timeout=10) == 6
    assert shipped_tasks.Multiply.name == "tests.shipped_tasks.Multiply"
    described = lab.task(shipped_tasks.plain_described, bind=True)
    assert described.delay(1).get(timeout=10)["name"] == "tests.shipped_tasks.plain_described", "the worker agrees"
    task_cell(shell, "def short(self):\n    return self.name\n", "--bind")
    assert shell.user_ns["short"].delay().get(timeout=10) == "short", "a %%task cell keeps its short names"


def test_tasks_of_a_script_keep_their_short_names(script_outcomes):
    assert script_outcomes["own_name"]["value"] == ["own_name", "own_name"]


STAMPS_PY = """
class Stamped(Exception):
    pass


def mark(x):
    return f"<{x}>"


def refuse(x):
    raise Stamped(x)
"""


def test_a_task_cell_using_a_local_module_ships_it(shell, lab, remote_worker, tmp_path, monkeypatch):
    (tmp_path / "stamps_local.py").write_text(STAMPS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "stamps_local", raising=False)
    try:
        task_cell(shell, "import stamps_local\n\ndef stamp(x):\n    return stamps_local.mark(x)\n")
        assert shell.user_ns["stamp"].delay(1).get(timeout=20) == "<1>", "the cell's own import finds it"
        run_cell(shell, "from stamps_local import Stamped, refuse")
        task_cell(shell, "def stamp_or_refuse(x):\n    return refuse(x)\n")
        with pytest.raises(shell.user_ns["Stamped"]):
            shell.user_ns["stamp_or_refuse"].delay(2).get(timeout=20)
    finally:
        sys.modules.pop("stamps_local", None)
