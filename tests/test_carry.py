"""A ``%%task`` cell uses what the notebook already has: imports, helpers and values of earlier cells
travel with its code to real worker processes, which see nothing of the notebook."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError

import tasklab
from tasklab.code import cells

from .conftest import run_cell, task_cell


def test_the_seed_example_a_base_in_one_cell_and_tasks_in_the_next(shell, lab, tmp_path, capsys):
    lab.workers(1)
    database = tmp_path / "users.db"
    run_cell(shell, "import tasklab")
    task_cell(
        shell,
        "import os, sqlite3\n"
        "class DatabaseTask(tasklab.Task):\n"
        "    _db = None\n"
        "    @property\n"
        "    def db(self):\n"
        "        if self._db is None:\n"
        f"            self._db = sqlite3.connect({str(database)!r})\n"
        "            self._db.execute('create table if not exists users (name text, age int, pid int)')\n"
        "        return self._db\n",
    )
    assert "carried from the notebook: tasklab (import)" in capsys.readouterr().out
    task_cell(
        shell,
        "def insert_user(self, name, age):\n"
        "    with self.db:\n"
        "        self.db.execute('insert into users values (?, ?, ?)', (name, age, os.getpid()))\n"
        "    return os.getpid()\n",
        "--base DatabaseTask --bind",
    )
    assert "carried from the notebook: os (import)" in capsys.readouterr().out
    worker_pid = shell.user_ns["insert_user"].delay("ada", 36).get(timeout=10)
    assert worker_pid in [w.pid for w in lab.pool.processes] and worker_pid != os.getpid()


def test_imports_helpers_and_values_of_plain_cells_travel_and_are_named(shell, lab, capsys):
    lab.workers(1)
    run_cell(
        shell,
        "import json as js\n"
        "from os.path import join\n"
        "CHUNK = 3\n"
        "def helper(x):\n"
        "    return Scaler(CHUNK).scale(x)\n"
        "class Scaler:\n"
        "    def __init__(self, by):\n"
        "        self.by = by\n"
        "    def scale(self, x):\n"
        "        return self.by * x\n",
    )
    task_cell(shell, "def f(x):\n    return js.dumps([join('a', 'b'), helper(x)])\n")
    out = capsys.readouterr().out
    assert "carried from the notebook: join, js (import), helper (function), Scaler (class), CHUNK (value)" in out
    assert shell.user_ns["f"].delay(2).get(timeout=10) == '["a/b", 6]'


def test_a_job_runs_with_the_values_its_code_was_registered_with(shell, lab):
    run_cell(shell, "CHUNK = 3\n")
    task_cell(shell, "def chunk():\n    return CHUNK\n")
    first = shell.user_ns["chunk"]
    queued = first.delay()  # no workers yet: it waits in the queue
    run_cell(shell, "CHUNK = 5\n")
    task_cell(shell, "def chunk():\n    return CHUNK\n")
    later = shell.user_ns["chunk"].delay()
    assert first._tl_version != shell.user_ns["chunk"]._tl_version, "the version covers what was carried"
    lab.workers(1)
    assert (queued.get(timeout=10), later.get(timeout=10)) == (3, 5)


def test_a_private_helper_of_an_earlier_task_cell_comes_with_that_cell(shell, lab):
    lab.workers(1)
    task_cell(shell, "def _double(x):\n    return 2 * x\n")
    helper_cell = cells.local_cells()[-1]
    task_cell(shell, "def quadruple(x):\n    return _double(_double(x))\n")
    assert shell.user_ns["quadruple"]._tl_cell.deps == {"_double": (helper_cell.version, "_double")}
    assert shell.user_ns["quadruple"].delay(3).get(timeout=10) == 12


def test_what_cannot_travel_is_refused_with_the_fix_and_nothing_is_registered(shell, lab, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("rows\n")
    run_cell(shell, f"import threading\nhandle = open({str(path)!r})\nlock = threading.Lock()\n")
    with pytest.raises(UsageError) as info:
        task_cell(shell, "def reads():\n    with lock:\n        return handle.read() + missing\n")
    message = str(info.value)
    assert "`handle` is used in `reads` but cannot be sent to the workers: it is an open file" in message
    assert "pass its path and open the file inside the task" in message
    assert "`lock` is used in `reads` but cannot be sent to the workers: it is a _thread.lock" in message
    assert "make it inside the task" in message
    assert "`missing` is used in `reads` but not defined in this cell or the notebook" in message
    assert "reads" not in shell.user_ns and lab.registry.current(lab.namespace).get("reads") is None
    run_cell(shell, "handle.close()")


def test_a_notebook_value_that_stays_in_the_notebook_is_not_carried(shell, lab, capsys):
    task_cell(shell, "def plain(x):\n    return x\n")
    assert "carried" not in capsys.readouterr().out
    assert shell.user_ns["plain"]._tl_cell.prelude == "" and shell.user_ns["plain"]._tl_cell.globals_blob is None
    assert isinstance(shell.user_ns["plain"], tasklab.Task)


def test_what_a_worker_needs_comes_in_the_order_it_needs_it(shell, lab):
    lab.workers(1)
    run_cell(
        shell,
        "import dataclasses, functools\n"
        "class Base:\n"
        "    kind = 'base'\n"
        "class Child(Base):\n"
        "    pass\n"
        "@dataclasses.dataclass\n"
        "class Point:\n"
        "    x: int = 1\n"
        "@functools.lru_cache\n"
        "def tripled(x):\n"
        "    return 3 * x\n"
        "def make():\n"
        "    k = 7\n"
        "    def closed():\n"
        "        return k\n"
        "    return closed\n"
        "closed = make()\n"
        "k = 99\n"
        "def scaled(x):\n"
        "    return x * scale\n",
    )
    task_cell(
        shell,
        "scale = 2\ndef uses(x):\n    return [Child.kind, Base.kind, Point().x, tripled(x), closed(), scaled(x)]\n",
    )
    # The subclass before its base in the cell, a dataclass with fields only, a decorated helper, a
    # closure (its own k, not the notebook's), and a helper reading a name the cell itself defines.
    assert shell.user_ns["uses"].delay(5).get(timeout=10) == ["base", "base", 1, 15, 7, 10]


def test_a_submodule_read_through_its_package_is_imported(shell, lab):
    lab.workers(1)
    run_cell(shell, "import xml.etree.ElementTree\n")
    task_cell(shell, "def tag(text):\n    return xml.etree.ElementTree.fromstring(text).tag\n")
    assert shell.user_ns["tag"].delay("<root/>").get(timeout=10) == "root"


def test_ipython_s_own_names_are_refused_with_the_reason(shell, lab):
    with pytest.raises(
        UsageError, match="`display` is used in `shows` but cannot be sent to the workers: it is IPython's"
    ):
        task_cell(shell, "def shows(x):\n    display(x)\n    return x\n")


def test_values_are_carried_before_any_lab_is_connected(run_python):
    # No key anywhere yet: registering copies the values, and signing waits for the lab.
    script = (
        "import os, tasklab\n"
        "from tasklab.code.define import register_cell\n"
        "namespace = {'CHUNK': 3}\n"
        "tasks = register_cell('def chunk():\\n    return CHUNK\\n', namespace, report=print)\n"
        "print(sorted(tasks))\n"
    )
    done = run_python(script, env={**os.environ, "TASKLAB_SECRET": ""})
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert "carried from the notebook: CHUNK (value)" in out and "['chunk']" in out


def test_a_subclass_of_a_registered_task_runs_its_own_code(shell, lab):
    lab.workers(1)
    run_cell(shell, "import tasklab")
    task_cell(shell, "class Fetch(tasklab.Task):\n    def run(self):\n        return 'fetch'\n")
    run_cell(shell, "class Fetch2(Fetch):\n    def run(self):\n        return 'fetch2'\n")
    assert run_cell(shell, "Fetch2.delay().get(timeout=10)") == "fetch2"
    assert run_cell(shell, "Fetch.delay().get(timeout=10)") == "fetch"
