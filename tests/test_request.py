"""``self.request`` (issue 15): Celery's fields, with a real value where tasklab knows one and ``None``
otherwise, on a worker and in workflows. (``apply()``'s eager request: tests/test_celery_parity.py.)"""

from __future__ import annotations

import socket

import tasklab

from .conftest import task_cell

#: A bound task returning Celery's request fields (and its arguments, the results it follows).
SEEN = """
def seen(self, *values):
    r = self.request
    fields = ("id", "hostname", "delivery_info", "group", "root_id", "parent_id", "eta", "expires", "is_eager",
              "timelimit", "correlation_id", "origin", "chord", "callbacks", "errbacks")
    return {**{name: getattr(r, name) for name in fields}, "values": list(values)}
"""


def test_request_has_celerys_fields_on_a_worker(shell, lab):
    lab.workers(1, queues=["default", "io"])
    task_cell(shell, SEEN, "--bind --time-limit 30 --soft-time-limit 20")
    result = shell.user_ns["seen"].apply_async(queue="io")
    seen = result.get(timeout=10)
    assert seen["hostname"] == f"{lab.pool.names[0]}@{socket.gethostname()}"
    assert seen["delivery_info"]["routing_key"] == "io" and seen["delivery_info"]["exchange"] == ""
    assert seen["correlation_id"] == seen["root_id"] == seen["id"] == result.id, "sent alone, it is its own root"
    assert tuple(seen["timelimit"]) == (30, 20), "(hard, soft), as Celery"
    assert seen["is_eager"] is False
    assert {
        k: seen[k] for k in ("group", "parent_id", "eta", "expires", "origin", "chord", "callbacks", "errbacks")
    } == dict.fromkeys(("group", "parent_id", "eta", "expires", "origin", "chord", "callbacks", "errbacks"))
    task_cell(shell, SEEN.replace("def seen", "def unlimited"), "--bind")
    assert tuple(shell.user_ns["unlimited"].delay().get(timeout=10)["timelimit"]) == (None, None)
    assert shell.user_ns["seen"].request.hostname is None, "called directly, the request is empty"


def test_request_names_the_workflow_group_and_parent(shell, lab):
    lab.workers(2)
    task_cell(shell, SEEN, "--bind")
    seen = shell.user_ns["seen"]
    chord = tasklab.chord([seen.s(1), seen.s(2)], seen.s()).apply_async(task_id="the-chord")
    callback = chord.get(timeout=20)
    header = chord.parent
    members = [r.get(timeout=10) for r in header.results]
    assert [m["group"] for m in members] == [header.id, header.id], "the header's group"
    assert [m["root_id"] for m in members] == ["the-chord", "the-chord"] and callback["root_id"] == "the-chord"
    assert [m["parent_id"] for m in members] == [None, None], "the first steps follow nothing"
    assert callback["group"] is None and callback["parent_id"] == header.results[-1].id
    chained = tasklab.chain(seen.s(1), seen.s()).apply_async()
    second = chained.get(timeout=20)
    assert second["parent_id"] == chained.parent.id and second["root_id"] == chained.id


def test_request_names_the_callbacks_and_errbacks(shell, lab):
    lab.workers(1)
    task_cell(shell, SEEN, "--bind")
    task_cell(shell, "def after(value):\n    return value\n\n\ndef oops(request, exc, traceback):\n    pass\n")
    seen, after, oops = (shell.user_ns[name] for name in ("seen", "after", "oops"))
    result = seen.apply_async(link=after.s(), link_error=oops.s())
    fields = result.get(timeout=10)
    (callback,) = result.children
    assert fields["callbacks"] == [{"task": "after", "id": callback.id}]
    assert fields["errbacks"] == [{"task": "oops", "id": None}], "called in the worker: no job of its own"
    assert seen.delay().get(timeout=10)["callbacks"] is None, "none given: None, as Celery's"
