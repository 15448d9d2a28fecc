"""Workflows on real workers: signatures, chains, groups, chords, failures, nesting and scale."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from rq.group import Group
from rq.job import Job

import tasklab
from tasklab.code.serialization import Serializer
from tasklab.engine import keys
from tasklab.engine import workflow as canvas

from .conftest import task_cell, wait_for

TASKS = """
from rq import get_current_job

def add(x, y):
    return x + y

def mul(x, y):
    return x * y

def total(values):
    return sum(values)

def check(x, bad=3):
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x

def mark(value, name):
    # Counts its runs in Redis, so a test can see that a step never ran, or ran once.
    get_current_job().connection.incr(name)
    return value

def collect(values):
    get_current_job().connection.incr("collect-runs")
    return len(values), sum(values)

def held(value, gate):
    # Returns value once the test opens its gate (a Redis list).
    get_current_job().connection.blpop(gate, timeout=30)
    return value

def whoami(x):
    # The item, and the job that ran it.
    return x, get_current_job().id
"""


@pytest.fixture
def t(shell, lab):
    """The tasks of TASKS, by name, with two workers running."""
    lab.workers(2)
    task_cell(shell, TASKS)
    return SimpleNamespace(
        **{name: shell.user_ns[name] for name in ("add", "mul", "total", "check", "mark", "collect", "whoami", "held")}
    )


def meta(lab, job_id):
    return Job.fetch(job_id, connection=lab.connection, serializer=Serializer).meta


def test_signatures_partial_and_immutable(t, lab):
    assert t.add.s(2).delay(8).get(timeout=10) == 10, "given arguments come before the partial ones"
    assert t.add.s(y=5).apply_async((1,)).get(timeout=10) == 6
    assert t.add.si(1, 2).delay().get(timeout=10) == 3
    sig = tasklab.signature(t.add, args=(1,), queue="default")
    assert repr(sig) == "add.s(1)" and sig.options == {"queue": "default"}
    assert sig.apply_async((4,), countdown=0.1).get(timeout=10) == 5
    assert sig(2) == 3, "calling a signature runs it here"
    with pytest.raises(tasklab.CanvasError, match=r"add\.si\(1, 2\) is immutable"):
        t.add.si(1, 2).delay(3)
    with pytest.raises(tasklab.ConfigurationError, match="Unknown workflow option priority"):
        t.add.s(1).set(priority=3)


def test_chain_by_function_and_by_pipe(t, lab):
    by_function = tasklab.chain(t.add.s(1, 2), t.mul.s(10), t.add.s(4)).apply_async()
    by_pipe = (t.add.s(1, 2) | t.mul.s(10) | t.add.s(4)).delay()
    assert by_function.get(timeout=10) == by_pipe.get(timeout=10) == 34
    assert by_pipe.parent.get(timeout=1) == 30 and by_pipe.parent.parent.get(timeout=1) == 3
    assert by_pipe.parent.parent.parent is None
    steps = [by_pipe.parent.parent.id, by_pipe.parent.id, by_pipe.id]
    metas = [meta(lab, job_id) for job_id in steps]
    assert [m[keys.META_WORKFLOW] for m in metas] == [by_pipe.id] * 3, "the workflow's id is its result's"
    assert [m[canvas.META_STEP] for m in metas] == [1, 2, 3]
    assert metas[1][canvas.META_WHERE] == "step 2 of 3"
    assert (t.add.s(1, 1) | t.add.si(5, 5)).delay().get(timeout=10) == 10, "si ignores the previous result"
    assert tasklab.chain(t.add.s(1), t.mul.s(3)).delay(1).get(timeout=10) == 6, "delay's arguments go first"
    routed = tasklab.chain(t.add.s(1, 2), t.mul.s(2).set(queue="default")).apply_async(queue="nowhere")
    first, second = (Job.fetch(r.id, connection=lab.connection, serializer=Serializer) for r in (routed.parent, routed))
    assert (first.origin, second.origin) == ("nowhere", "default"), "a step's own options win over the workflow's"
    assert second.get_status() == "deferred"
    named = tasklab.chain(t.add.s(1, 2), t.mul.s(2)).apply_async(task_id="my-chain")
    assert named.id == "my-chain" and tasklab.AsyncResult("my-chain").get(timeout=10) == 6


def test_group(t, lab):
    result = tasklab.group(t.add.s(i, i) for i in range(10)).delay()
    assert isinstance(result, tasklab.GroupResult)
    assert result.get(timeout=10) == [2 * i for i in range(10)]
    assert result.ready() and result.successful() and result.completed_count() == 10
    assert [r.id for r in result.results] == [r.id for r in result]
    rq_group = Group.fetch(result.id, lab.connection)
    assert {job.id for job in rq_group.get_jobs()} == {r.id for r in result}
    assert tasklab.group(t.add.s(1, 1), t.mul.s(2, 3)).apply_async().get(timeout=10) == [2, 6]

    failing = tasklab.group(t.check.s(i) for i in range(5)).delay()
    with pytest.raises(ValueError, match="bad value 3") as info:
        failing.get(timeout=10)
    assert f"member 4 of 5 of group {failing.id} (task check, job {failing[3].id})" in "".join(info.value.__notes__)
    values = failing.get(timeout=10, propagate=False)
    assert values[:3] == [0, 1, 2] and isinstance(values[3], ValueError) and values[4] == 4
    assert failing.completed_count() == 4 and not failing.successful()


def test_chord_by_function_by_call_and_by_pipe(t, lab):
    by_function = tasklab.chord((t.add.s(i, i) for i in range(5)), t.total.s()).apply_async()
    by_call = tasklab.chord([t.add.s(i, i) for i in range(5)])(t.total.s())
    by_pipe = (tasklab.group(t.add.s(i, i) for i in range(5)) | t.total.s()).delay()
    assert by_function.get(timeout=10) == by_call.get(timeout=10) == by_pipe.get(timeout=10) == 20
    assert by_pipe.parent.get(timeout=1) == [0, 2, 4, 6, 8]
    assert meta(lab, by_pipe.id)[keys.META_MERGE] == "list"


def test_failure_in_the_middle_of_a_chain_stops_it(t, lab):
    result = (t.add.s(1, 2) | t.check.s() | t.mark.s("after-failure") | t.add.s(1)).delay()
    later = tasklab.AsyncResult(result.parent.id)
    wait_for(lambda: later.state == "REVOKED", 10, "the worker to cancel the steps after the failure")
    failed = result.parent.parent
    assert meta(lab, later.id)[canvas.META_CAUSE] == failed.id
    with pytest.raises(ValueError, match="bad value 3") as info:
        result.get(timeout=10)
    assert failed.state == "FAILURE"
    notes = "".join(info.value.__notes__)
    assert f"step 2 of 4 of chain {result.id} (task check, job {failed.id})" in notes
    assert result.state == "FAILURE" and result.failed()
    assert isinstance(result.get(timeout=1, propagate=False), ValueError)
    assert not lab.connection.exists("after-failure"), "no step after the failure ran"


def test_failing_chord_member_fails_the_chord(t, lab):
    result = tasklab.chord([t.check.s(i) for i in range(40)], t.mark.s("callback-ran")).delay()  # with join jobs
    started = time.monotonic()
    with pytest.raises(tasklab.ChordError) as info:
        result.get(timeout=10)
    assert time.monotonic() - started < 5, "the failure is reported at once, not at the timeout"
    member = result.parent[3]
    message = str(info.value)
    assert f"Member 4 of 40 of the header of chord {result.id} (task check, job {member.id})" in message
    assert "ValueError('bad value 3')" in message and "the callback (task mark) did not run" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert tasklab.AsyncResult(result.id).state == "REVOKED"
    assert not lab.connection.exists("callback-ran")


def test_chain_containing_a_group_and_a_group_of_chains(t, lab):
    result = (t.add.s(1, 2) | tasklab.group(t.mul.s(10), t.add.s(1)) | t.total.s()).delay()
    assert result.get(timeout=10) == 34
    assert result.parent.get(timeout=1) == [30, 4]
    assert meta(lab, result.parent[0].id)[canvas.META_WHERE] == "member 1 of 2 in step 2 of 3"
    pairs = tasklab.group(t.add.s(1, 1) | t.mul.s(2), t.add.s(2, 2) | t.mul.s(3)).delay()
    assert pairs.get(timeout=10) == [4, 12]
    ending = (t.add.s(1, 1) | tasklab.group(t.mul.s(2), t.mul.s(3))).delay()
    assert isinstance(ending, tasklab.GroupResult) and ending.get(timeout=10) == [4, 6]


def test_chord_of_a_thousand_members_runs_its_callback_once(t, lab):
    started = time.perf_counter()
    result = tasklab.chord(t.add.s(i, i) for i in range(1000))(t.collect.s())
    submitted = time.perf_counter() - started
    assert tuple(result.get(timeout=60)) == (1000, 999000)
    finished = time.perf_counter() - started
    print(f"1000-member chord: submitted in {submitted:.2f} s, finished in {finished:.2f} s")
    assert submitted < 5
    wait_for(lambda: lab.queue().count == 0 and not lab.queue().started_job_registry.get_job_ids(), 10, "idle")
    assert lab.connection.get("collect-runs") == b"1", "the callback ran exactly once"
    members = Job.fetch_many([r.id for r in result.parent], lab.connection, serializer=Serializer)
    callback = Job.fetch(result.id, connection=lab.connection, serializer=Serializer)
    assert callback.started_at >= max(job.ended_at for job in members), "the callback started after every member"


def test_submit_time_errors(t, lab):
    with pytest.raises(tasklab.CanvasError, match="print is not a tasklab task"):
        tasklab.signature(print)
    with pytest.raises(tasklab.CanvasError, match=r"step 1 of the chain is <lambda>, not a signature"):
        tasklab.chain(lambda: 1)
    with pytest.raises(tasklab.CanvasError, match=r"the task add itself; give a signature: add\.s"):
        tasklab.chain(t.add.s(1, 2), t.add)
    with pytest.raises(tasklab.CanvasError, match=r"step 2 of 2 of chain \S+ \(task add, job \S+\) cannot be called "
                       r"with the previous step's result as its first argument: add\(x, y\): too many"):  # fmt: skip
        (t.add.s(1, 2) | t.add.s(1, 2)).delay()
    with pytest.raises(tasklab.CanvasError, match="the list of the group's results"):
        (tasklab.group(t.add.s(1, 2)) | t.add.s(1, 2)).delay()
    with pytest.raises(tasklab.CanvasError, match="The chain is empty"):
        tasklab.chain().delay()
    with pytest.raises(tasklab.CanvasError, match="The group is empty"):
        tasklab.group([]).delay()
    with pytest.raises(tasklab.CanvasError, match=r"The group in step 2 of 2 is empty"):
        (t.add.s(1, 2) | tasklab.group()).delay()
    with pytest.raises(tasklab.CanvasError, match="sets countdown, which only the first steps"):
        (t.add.s(1, 2) | t.add.s(1).set(countdown=5)).delay()
    with pytest.raises(tasklab.CanvasError, match="has no callback"):
        tasklab.chord([t.add.s(1, 2)]).delay()
    assert lab.queue().count == 0 and not lab.connection.keys("rq:job:*"), "nothing was submitted"


def test_a_revoked_step_stops_the_chain(t, lab):
    result = (t.add.s(1, 2).set(countdown=30) | t.add.s(1) | t.mark.s("after-revoke")).delay()
    result.parent.parent.revoke()
    with pytest.raises(tasklab.TaskRevokedError) as info:
        result.get(timeout=10)
    assert "step 1 of 3" in "".join(info.value.__notes__)
    assert tasklab.AsyncResult(result.parent.id).state == "REVOKED", "the waiting side cancelled the rest"
    assert not lab.connection.exists("after-revoke")


def test_workflow_completes_after_the_submitting_lab_shuts_down(server, lab):
    other = tasklab.Lab(server.url, namespace="elsewhere", autostart_workers=False)
    tasks = tasklab.register_cell(TASKS, {}, app=other)
    add, mul, total = tasks["add"], tasks["mul"], tasks["total"]
    result = (add.s(1, 2) | tasklab.group(mul.s(10), add.s(1)) | total.s()).delay()
    other.shutdown()
    lab.workers(2)
    assert tasklab.AsyncResult(result.id).get(timeout=10) == 34
    assert meta(lab, result.id)[keys.META_NAMESPACE] == "elsewhere"


def test_a_cancelled_step_reraises_the_failure_that_cancelled_it(lab):
    lab.workers(2)
    ns: dict = {}
    tasklab.register_cell(
        "def first(x):\n    raise KeyError(f'missing {x}')\n\ndef second(y):\n    return y\n", ns, app=lab
    )
    result = (ns["first"].s(1) | ns["second"].s()).delay()
    with pytest.raises(KeyError, match="missing 1"):
        result.get(timeout=10)
    later = tasklab.AsyncResult(result.id)
    wait_for(lambda: later.state == "REVOKED", 10, "the second step to be cancelled")
    with pytest.raises(KeyError, match="missing 1"):
        later.get(timeout=5)


def test_monitor_and_history_show_the_workflow(lab):
    from tasklab.widgets.monitor import Monitor

    lab.workers(2)
    ns: dict = {}
    tasklab.register_cell("def inc(x):\n    return x + 1\n", ns, app=lab)
    result = (ns["inc"].s(1) | ns["inc"].s()).delay()
    assert result.get(timeout=10) == 3
    frame = lab.history()
    assert frame["workflow"].nunique() == 1 and frame["workflow"].notna().all()
    workflow = frame["workflow"].iloc[0]
    monitor = Monitor(lab, plots=False)
    monitor.refresh()
    assert all(f"[workflow {workflow[:8]}]" in label for label, _ in monitor.recent.options)


def test_map_and_starmap_are_lazy_signatures_of_one_job(t, lab):
    sig = t.whoami.map([1, 2, 3])
    assert isinstance(sig, tasklab.Signature) and repr(sig) == "[whoami(x) for x in (1, 2, 3)]"
    assert repr(t.add.starmap([(1, 2)])) == "[add(*x) for x in ((1, 2),)]"
    assert not lab.connection.keys("rq:job:*"), "nothing is submitted until the signature is applied"
    result = sig.delay()
    values = result.get(timeout=10)
    assert [item for item, _ in values] == [1, 2, 3], "the items run in order"
    assert {job for _, job in values} == {result.id}, "every item ran in the map's one job"
    assert len(lab.connection.keys("rq:job:*")) == 1
    assert ~t.total.map([range(10), range(100)]) == [45, 4950]
    assert ~t.add.starmap(zip(range(10), range(10), strict=True)) == [2 * i for i in range(10)]
    later = t.add.starmap([(1, 2), (3, 4)]).apply_async(countdown=0.5)
    assert later.eta is not None, "countdown schedules the one job"
    assert later.get(timeout=10) == [3, 7]
    assert (t.total.map([[1, 2], [3]]) | t.total.s()).delay().get(timeout=10) == 6, "a map is a step like any"
    with pytest.raises(ValueError, match="bad value 3"):
        t.check.map([1, 2, 3, 4]).delay().get(timeout=10)


def test_map_refuses_bad_items_when_made(t, lab):
    with pytest.raises(tasklab.CanvasError, match=r"Item 1 of add\.starmap\(\) does not fit the task: add\(x, y\)"):
        t.add.starmap([(1, 2), (1,)])
    with pytest.raises(tasklab.CanvasError, match=r"Item 0 of add\.starmap\(\) is 5; each item is a tuple"):
        t.add.starmap([5])
    with pytest.raises(tasklab.CanvasError, match=r"total\.map\(\) takes an iterable of items, not 5"):
        t.total.map(5)
    with pytest.raises(tasklab.CanvasError, match=r"takes no arguments when it is applied"):
        t.total.map([[1]]).delay(5)
    with pytest.raises(tasklab.CanvasError, match=r"n=0 must be a whole number, 1 or more"):
        t.add.chunks([(1, 2)], 0)
    with pytest.raises(tasklab.CanvasError, match=r"Item 2 of add\.chunks\(\) does not fit the task"):
        t.add.chunks([(1, 2), (3, 4), (5,)], 2)
    assert not lab.connection.keys("rq:job:*"), "nothing was submitted"


def test_chunks_split_into_starmap_jobs(t, lab):
    result = t.add.chunks(zip(range(100), range(100), strict=True), 10)()
    assert isinstance(result, tasklab.GroupResult) and len(result) == 10
    assert result.get(timeout=30) == [[2 * i for i in range(k * 10, k * 10 + 10)] for k in range(10)]
    assert ~t.add.chunks([(i, i) for i in range(5)], 2) == [[0, 2], [4, 6], [8]], "the last part may be shorter"
    parts = t.add.chunks(zip(range(4), range(4), strict=True), 2).group()
    assert isinstance(parts, tasklab.group) and repr(parts.tasks[1]) == "[add(*x) for x in ((2, 2), (3, 3))]"
    skewed = parts.skew(start=0.2, step=0.2)
    assert [member.options["countdown"] for member in skewed.tasks] == [0.2, 0.4]
    assert skewed.apply_async().get(timeout=10) == [[0, 2], [4, 6]]
    callback = (t.add.chunks(zip(range(4), range(4), strict=True), 2) | t.mark.s("after-chunks")).delay()
    assert callback.get(timeout=10) == [[0, 2], [4, 6]], "chunks | callback is a chord over the parts"


def test_invert_applies_and_waits(t, lab):
    assert ~t.add.s(1, 1) == 2
    assert ~(t.add.s(1, 1) | t.add.s(2)) == 4
    assert ~tasklab.group(t.add.s(1, 1), t.add.s(2, 2)) == [2, 4]


def test_a_one_member_group_in_a_chain_is_unrolled(t, lab):
    result = tasklab.chain(t.add.s(1, 1), tasklab.group(t.add.s(2))).delay()
    assert not isinstance(result, tasklab.GroupResult) and result.get(timeout=10) == 4
    piped = (t.add.s(1, 1) | tasklab.group(t.add.s(2)) | t.mark.s("after-one")).delay()
    assert piped.get(timeout=10) == 4, "the step after it receives the member's value, not a list of one"
    assert meta(lab, piped.parent.id)[canvas.META_WHERE] == "step 2 of 3"
    alone = tasklab.group(t.add.s(1, 1)).delay()
    assert isinstance(alone, tasklab.GroupResult) and alone.get(timeout=10) == [2], "alone, a group stays a group"
    assert (tasklab.group(t.add.s(1, 1)) | t.total.s()).delay().get(timeout=10) == 2, "group | callback: a chord"


def test_group_result_surface(t, lab):
    result = tasklab.group(t.add.s(1, 1), t.held.s(5, "gate-1"), t.check.s(3)).delay()
    wait_for(lambda: result[0].ready() and result[2].ready(), 10, "the free members to finish")
    assert result.waiting() and not result.ready()
    assert result.completed_count() == 1 and result.failed() and not result.successful()
    with pytest.raises(tasklab.TimeoutError, match="1 of 3 members"):
        result.join(timeout=0.3, propagate=False)
    lab.connection.rpush("gate-1", 1)
    seen: list = []
    assert result.join(timeout=10, propagate=False, callback=lambda *pair: seen.append(pair)) is None
    assert [task_id for task_id, _ in seen] == [r.id for r in result], "the callback sees the members in order"
    assert seen[0][1] == 2 and seen[1][1] == 5 and isinstance(seen[2][1], ValueError)
    assert result.ready() and not result.waiting() and result.join_native(timeout=1, propagate=False)[:2] == [2, 5]
    assert result.children == result.results == list(result)
    with pytest.raises(ValueError, match="bad value 3"):
        result.maybe_throw()
    result.maybe_throw(propagate=False)
    assert result.supports_native_join
    result.forget()
    assert not any(lab.connection.exists(Job.key_for(r.id)) for r in result)
    assert not lab.connection.exists(Group.get_key(result.id))


def test_result_set_iterates_in_finish_order_and_edits_like_celerys(t, lab):
    results = t.held.starmap_async([(1, "gate-a"), (2, "gate-b")])
    finished = results.iter_native(timeout=10)
    lab.connection.rpush("gate-b", 1)
    assert next(finished) == (results[1].id, 2), "the member that finished first comes first"
    lab.connection.rpush("gate-a", 1)
    assert next(finished) == (results[0].id, 1)
    assert next(finished, None) is None
    late = tasklab.ResultSet([t.held.delay(3, "gate-c")])
    with pytest.raises(tasklab.TimeoutError, match=r"1 of 1 tasks did not finish within 0\.3 s"):
        list(late.iter_native(timeout=0.3))
    lab.connection.rpush("gate-c", 1)
    assert list(late.iter_native(timeout=10)) == [(late[0].id, 3)]
    first, second = results
    edited = tasklab.ResultSet([first])
    edited.add(first)
    edited.update([first, second])
    assert list(edited) == [first, second], "add and update skip members already in"
    edited.discard(first)
    edited.discard(first)
    assert list(edited) == [second]


def _job(lab, job_id):
    return Job.fetch(job_id, connection=lab.connection, serializer=Serializer)


def test_a_chord_callback_waits_for_a_member_held_back(t, lab):
    lab.workers(3)  # a worker stays free to take the callback, were it queued too early
    result = tasklab.chord([t.add.s(1, 1), t.held.s(5, "hold-member"), t.add.s(2, 2)], t.mark.s("chord-ran")).delay()
    free, held = [result.parent[0], result.parent[2]], result.parent[1]
    wait_for(lambda: all(r.state == "SUCCESS" for r in free) and held.state == "STARTED", 10, "the free members")
    deadline = time.monotonic() + 0.5  # a bounded look at something that must not happen
    while time.monotonic() < deadline:
        assert _job(lab, result.id).get_status() == "deferred", "the callback is queued before every member ended"
        assert not lab.connection.exists("chord-ran")
    lab.connection.rpush("hold-member", 1)
    assert result.get(timeout=10) == [2, 5, 4]
    assert _job(lab, result.id).started_at >= _job(lab, held.id).ended_at, "the callback started after the held one"


def test_a_chord_callback_gets_the_results_in_header_order_not_finish_order(t, lab):
    lab.workers(3)
    header = [t.held.s(value, f"order-{value}") for value in ("first", "second", "third")]
    result = tasklab.chord(header, t.mark.s("order-ran")).delay()
    members = list(result.parent)
    wait_for(lambda: all(r.state == "STARTED" for r in members), 10, "every member to start")
    for value, member in zip(("third", "second", "first"), reversed(members), strict=True):
        lab.connection.rpush(f"order-{value}", 1)  # the last member of the header finishes first
        wait_for(lambda member=member: member.state == "SUCCESS", 10, f"member {value} to finish")
    ended = [_job(lab, member.id).ended_at for member in members]
    assert ended[0] > ended[1] > ended[2], "the members finished in reverse order"
    assert result.get(timeout=10) == ["first", "second", "third"], "the callback receives them in header order"


def test_a_map_goes_to_its_tasks_app_and_queue(server, lab):
    other = tasklab.Lab(server.url, namespace="elsewhere", autostart_workers=False)
    tasks = tasklab.register_cell(TASKS, {}, app=other)
    routed = tasklab.register_cell("def ping(x):\n    return x\n", {}, {"queue": "maps"}, app=other)["ping"]
    mapped, pinged = tasks["add"].starmap([(1, 2), (3, 4)]).delay(), routed.map([1, 2]).delay()
    lab.workers(1, queues=["default", "maps"])
    assert mapped.get(timeout=10) == [3, 7] and pinged.get(timeout=10) == [1, 2]
    assert meta(lab, mapped.id)[keys.META_NAMESPACE] == "elsewhere", "submitted through the task's own app"
    assert meta(lab, mapped.id)[keys.META_TASK] == "tasklab.starmap"
    assert _job(lab, pinged.id).origin == "maps", "a map runs on its task's queue"
    other.shutdown()


def test_a_mapped_bound_task_gets_a_request_of_its_own(shell, lab):
    lab.workers(1)
    task_cell(shell, "def asks(self, x):\n    return self.request.called_directly, self.request.args\n", "--bind")
    assert ~shell.user_ns["asks"].map([1, 2]) == [(True, (1,)), (True, (2,))], "as Celery's task(item) in celery.map"
