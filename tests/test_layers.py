"""The package's shape: no import cycles, a light ``import tasklab``, and old job paths that still run."""

from __future__ import annotations

import base64
import subprocess
import sys

import grimp
import pytest
from rq.job import Job
from rq.utils import import_attribute

import tasklab
from tasklab.client import submit
from tasklab.client.workflow import write
from tasklab.code.serialization import Serializer, load_cell_object, load_task, loads
from tasklab.code.store import CODE_KEY, SIGNATURE_FIELD, CodeRegistry, _signed_content
from tasklab.code.version import TaskSpec
from tasklab.core.signing import keyring
from tasklab.engine.execution import execute_task
from tasklab.engine.workflow import failures_key, join, on_step_failure

from .conftest import task_cell, wait_for

#: Modules only a worker process needs, and modules that draw widgets.
WORKER_ONLY = {
    "tasklab.engine.worker",
    "tasklab.engine.worker_job",
    "tasklab.engine.execution",
    "tasklab.engine.capture",
    "tasklab.engine.scheduler",
    "tasklab.local.worker_process",
}
WIDGETS = {"tasklab.widgets.monitor", "tasklab.widgets.result_view", "tasklab.notebook.extension", "ipywidgets"}


def test_no_import_cycles_counting_imports_inside_functions():
    # grimp reads every import statement, at module level, inside functions and under TYPE_CHECKING.
    graph = grimp.build_graph("tasklab")
    in_cycles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if graph.chain_exists(importer=imported, imported=importer)
    ]
    assert in_cycles == []
    assert len(graph.modules) > 50, "the graph was built from the package"


def test_import_tasklab_loads_no_worker_or_widget_module():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tasklab; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "tasklab.lab" in loaded and "tasklab.client.result" in loaded
    assert sorted(set(loaded) & (WORKER_ONLY | WIDGETS)) == []


def test_the_paths_stored_jobs_name_resolve_to_the_current_functions():
    # Job hashes written before the packages name these dotted paths (RQ imports them by name).
    assert import_attribute("tasklab.runtime.execute_task") is execute_task
    assert import_attribute("tasklab.canvas.on_step_failure") is on_step_failure
    assert import_attribute("tasklab.canvas.join") is join


#: What code before the packages stored: the Redis hash of a code version (``def double(x)``, made with
#: ``max_retries=2``), whose ``tasks`` field pickles ``tasklab.registry.TaskSpec``, and a task passed as an
#: argument, pickled as ``tasklab.task._registered_task``. Written by tasklab at commit 7aedfc5.
OLD_VERSION = "169abc271e4d"
OLD_CODE = {
    "source": "ZGVmIGRvdWJsZSh4KToKICAgIHJldHVybiAyICogeAo=",
    "filename": "PHRhc2sgZG91YmxlIHYxNjlhYmMyPg==",
    "tasks": "gAWVfgAAAAAAAAB9lIwGZG91YmxllIwQdGFza2xhYi5yZWdpc3RyeZSMCFRhc2tTcGVjlJOUKYGUfZQojARuYW1llGgBjARraW5klIwI"
    "ZnVuY3Rpb26UjARhdHRylGgBjARiYXNllE6MB29wdGlvbnOUfZSMC21heF9yZXRyaWVzlEsCc3Vicy4=",
    "defines": "WyJkb3VibGUiXQ==",
    "bases": "W10=",
    "deps": "e30=",
}
OLD_TASK_REFERENCE = (
    "gAWVQQAAAAAAAACMDHRhc2tsYWIudGFza5SMEF9yZWdpc3RlcmVkX3Rhc2uUk5SMDDE2OWFiYzI3MWU0ZJSMBmRvdWJsZZSGlFKULg=="
)


def test_pickles_made_before_the_packages_still_load(lab):
    # The GLOBAL opcode names an object by module and name, as old pickles in Redis do (signed
    # since: unsigned, they are refused; see test_security).
    sign = keyring.sign
    assert loads(sign(b"ctasklab.serialization\nload_cell_object\n.")) is load_cell_object
    assert loads(sign(b"ctasklab.registry\nTaskSpec\n.")) is TaskSpec
    assert loads(sign(b"ctasklab.task\n_registered_task\n.")) is load_task
    assert loads(sign(b"ctasklab.result\nAsyncResult\n.")) is tasklab.AsyncResult


def test_code_and_tasks_stored_before_the_packages_still_run(lab):
    mapping = {k: base64.b64decode(v) for k, v in OLD_CODE.items()}
    mapping["tasks"] = keyring.sign(mapping["tasks"])  # as if it had been signed when stored
    mapping[SIGNATURE_FIELD] = keyring.mac(_signed_content(OLD_VERSION, mapping)).encode()
    lab.connection.hset(CODE_KEY.format(OLD_VERSION), mapping=mapping)
    cell = CodeRegistry(lab.connection).fetch(OLD_VERSION)
    assert cell.tasks["double"] == TaskSpec("double", "function", "double", None, {"max_retries": 2})
    double = loads(keyring.sign(base64.b64decode(OLD_TASK_REFERENCE)))  # loads the old code version from Redis
    assert double.name == "double" and double._tl_version == OLD_VERSION
    lab.workers(1)
    assert double.delay(21).get(timeout=20) == 42  # the worker loads the old code version too


def test_jobs_written_under_the_old_paths_still_run(shell, lab, monkeypatch):
    lab.workers(1)
    task_cell(shell, TASKS)
    add, total, check = (shell.user_ns[name] for name in ("add", "total", "check"))
    monkeypatch.setattr(submit, "EXECUTE", "tasklab.runtime.execute_task")
    monkeypatch.setattr(write, "FAILURE_CALLBACK", "tasklab.canvas.on_step_failure")
    monkeypatch.setattr(write, "JOIN", "tasklab.canvas.join")

    single = add.delay(2, 3)
    assert (
        Job.fetch(single.id, connection=lab.connection, serializer=Serializer).func_name
        == "tasklab.runtime.execute_task"
    )
    assert single.get(timeout=20) == 5

    # 40 members: the callback waits for join jobs, which run the old join path.
    chord = tasklab.chord([add.s(i, i) for i in range(40)], total.s()).delay()
    assert chord.get(timeout=30) == sum(2 * i for i in range(40))

    failing = (check.s(3) | add.s(1)).delay()
    with pytest.raises(ValueError):
        failing.get(timeout=20)
    first = failing.parent.id
    assert Job.fetch(first, connection=lab.connection)._failure_callback_name == "tasklab.canvas.on_step_failure"
    # Only the worker's failure callback writes the workflow's failure notice.
    notices = wait_for(lambda: lab.connection.xrange(failures_key(failing.id)), 10, "the old callback's notice")
    assert [fields[b"id"].decode() for _, fields in notices] == [first]


TASKS = """
def add(x, y):
    return x + y

def total(values):
    return sum(values)

def check(x):
    if x == 3:
        raise ValueError(x)
    return x
"""
