"""The plain Python API: decorators, Task subclasses, scripts, namespaces, notebooks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient

import tasklab
from tasklab.code.store import CODE_KEY, TASKS_KEY

from . import shipped_tasks


def test_importable_module_tasks_ship_by_path(lab):
    lab.workers(1, queues=["default", "maths"])
    assert shipped_tasks.add.delay(2, 3).get(timeout=10) == 5
    assert shipped_tasks.add._tl_version == "py:tests.shipped_tasks:add"
    assert not lab.connection.keys(CODE_KEY.format("py:*")), "no source is stored for importable tasks"
    result = shipped_tasks.Multiply.delay(4, 5)
    assert result.get(timeout=10) == 20
    assert lab.queue("maths").fetch_job(result.id).origin == "maths", "class attribute options apply"


def test_lab_task_decorator_binds_to_the_lab(lab):
    lab.workers(1)

    @lab.task(result_ttl=30)
    def shout(word):
        return word.upper() + SUFFIX

    result = shout.delay("hi")
    assert result.get(timeout=10) == "HI!"
    assert shout._tl_app is lab
    assert 0 < lab.connection.ttl(f"rq:job:{result.id}") <= 30, "the decorator's result_ttl applies"


SUFFIX = "!"


def test_script_functions_ship_with_their_imports_and_globals(tmp_path):
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            import sys
            from collections import Counter as Tally

            import tasklab

            SCALE = 3
            SETTINGS = {"sep": "-"}

            def helper(x):
                return x * SCALE

            @tasklab.task
            def encode(items):
                top = Tally(items).most_common(1)[0][0]
                return json.dumps({"n": helper(len(items)), "top": top, "sep": SETTINGS["sep"]})

            class Upper(tasklab.Task):
                def run(self, text):
                    return text.upper()

            @tasklab.task(bind=True)
            def relay(self, items):
                return encode.delay(items).id

            if __name__ == "__main__":
                lab = tasklab.connect(data_dir=sys.argv[1], namespace="pipeline")
                lab.workers(1)
                print(encode.delay(["a", "b", "a"]).get(timeout=20))
                print(Upper.delay("hi").get(timeout=20))
                print(tasklab.AsyncResult(relay.delay(["z"]).get(timeout=20)).get(timeout=20))
                lab.shutdown()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data")], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == '{"n": 9, "top": "a", "sep": "-"}'
    assert lines[1] == "HI"
    assert lines[2] == '{"n": 3, "top": "z", "sep": "-"}'


def test_script_function_using_an_undefined_name_says_so(lab):
    @tasklab.task
    def broken():
        return not_defined_anywhere  # noqa: F821

    with pytest.raises(tasklab.CellError, match="`not_defined_anywhere` is used in `broken`"):
        broken.delay()


def test_task_options_are_checked_when_set(lab):
    with pytest.raises(tasklab.ConfigurationError, match="Unknown task option 'retries'"):
        tasklab.task(retries=3)(lambda: None)
    with pytest.raises(tasklab.ConfigurationError, match="Did you mean 'max_retries'"):
        tasklab.task(maxretries=3)(lambda: None)
    with pytest.raises(tasklab.ConfigurationError, match=r"number of seconds > 0"):
        tasklab.task(time_limit=-3)(lambda: None)
    with pytest.raises(tasklab.ConfigurationError, match="an exception class"):
        tasklab.task(autoretry_for=("ValueError",))(lambda: None)

    class Limited(tasklab.Task):
        rate_limit = "5 per minute"

        def run(self):
            return 1

    with pytest.raises(tasklab.ConfigurationError, match="a rate such as"):
        Limited.delay()
    with pytest.raises(tasklab.ConfigurationError, match="lets no task start"):
        tasklab.task(rate_limit="0/s")(lambda: None)
    with pytest.raises(tasklab.ConfigurationError, match="cannot be set per call"):
        shipped_tasks.add.apply_async((1, 2), bind=True)
    with pytest.raises(tasklab.ConfigurationError, match="countdown or eta"):
        shipped_tasks.add.apply_async((1, 2), countdown=1, eta=1)


def test_namespaces_keep_same_named_tasks_apart(server, lab):
    lab.workers(1)
    other = tasklab.Lab(server.url, namespace="other-notebook", autostart_workers=False)
    try:
        mine: dict = {}
        theirs: dict = {}
        tasklab.register_cell("def report():\n    return 'mine'\n", mine, app=lab)
        tasklab.register_cell("def report():\n    return 'theirs'\n", theirs, app=other)
        assert mine["report"].delay().get(timeout=10) == "mine"
        assert theirs["report"].delay().get(timeout=10) == "theirs"
        assert lab.registry.current(lab.namespace)["report"] == mine["report"]._tl_version
        assert other.registry.current("other-notebook")["report"] == theirs["report"]._tl_version
        assert lab.connection.exists(TASKS_KEY.format("other-notebook"))
    finally:
        other.shutdown()


def test_notebook_runs_end_to_end_with_nbclient(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLAB_DATA_DIR", str(tmp_path / "data"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext tasklab"),
        nbformat.v4.new_code_cell(
            "%%task\nimport math\n\ndef hyp(a, b):\n    print('hyp', a, b)\n    return math.hypot(a, b)"
        ),
        nbformat.v4.new_code_cell("r = hyp.delay(3, 4)\nr.get(timeout=60)"),
        nbformat.v4.new_code_cell("r.status, r.output"),
        nbformat.v4.new_code_cell("%tasklab stop"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert nb.cells[2].outputs[-1]["data"]["text/plain"] == "5.0"
    assert nb.cells[3].outputs[-1]["data"]["text/plain"] == "('SUCCESS', 'hyp 3 4\\n')"
