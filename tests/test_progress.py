"""Live progress from inside a task: ``self.update_state``, read through ``AsyncResult.state``/``.info``,
drawn by the live badge and the monitor, and throttled (writes counted by Redis itself)."""

from __future__ import annotations

import time

import pytest

import tasklab
from tasklab.client.result import AsyncResult
from tasklab.engine import keys
from tasklab.errors import StateReportError
from tasklab.local.connection import make_client
from tasklab.widgets.monitor import Monitor
from tasklab.widgets.result_view import live_badge

from .conftest import task_cell, wait_for

BOUND = """
from rq import get_current_job

def count(self, n, gate, every=1):
    for i in range(n):
        if (i + 1) % every == 0 or i + 1 == n:
            self.update_state(state="PROGRESS", meta={"current": i + 1, "total": n})
    get_current_job().connection.blpop(gate, timeout=30)
    return n

def rows(self, gate):
    self.update_state(state="LOADING", meta={"rows": 3, "n_rows": 4})
    get_current_job().connection.blpop(gate, timeout=30)
    return "loaded"

def report_for(self, other_id):
    self.update_state(task_id=other_id, state="NUDGED", meta={"by": self.request.id})
    return "reported"

def reports_and_returns(self, n):
    for i in range(n):
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": n})
    return n

def final_state(self):
    self.update_state(state="SUCCESS", meta={})

def unserialisable(self):
    import threading
    self.update_state(state="PROGRESS", meta={"lock": threading.Lock()})

def retried(self, gate):
    if self.request.retries == 0:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
        raise self.retry(countdown=0.1)
    get_current_job().connection.blpop(gate, timeout=30)
    return "second attempt"
"""

SUBCLASS = """
import tasklab
from rq import get_current_job

class Steps(tasklab.Task):
    def run(self, n, gate):
        for i in range(n):
            self.update_state(state="STEP", meta={"current": i + 1, "total": n})
        get_current_job().connection.blpop(gate, timeout=30)
        return "done"
"""


@pytest.fixture
def t(shell):
    task_cell(shell, BOUND, "--bind")
    task_cell(shell, SUBCLASS)
    return shell.user_ns


@pytest.fixture
def report_writes(lab):
    """Count the writes of one job's report key as Redis sees them (keyspace notifications, on a
    client of the test's own)."""
    client = make_client(lab.url)
    client.config_set("notify-keyspace-events", "K$")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    counted = {"set": 0}

    def watch(job_id: str) -> dict[str, int]:
        pubsub.subscribe(f"__keyspace@0__:{keys.report_key(job_id)}")
        wait_for(lambda: pubsub.get_message(timeout=0.05) is None and pubsub.subscribed, 5, "the subscription")
        return counted

    def count() -> dict[str, int]:
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            counted["set"] += message["data"] == b"set"
        return counted

    watch.count = count  # type: ignore[attr-defined]
    yield watch
    pubsub.close()
    client.config_set("notify-keyspace-events", "")
    client.close()


def test_a_bound_task_reports_its_state_and_meta_while_it_runs(t, lab):
    lab.workers(1)
    r = t["count"].delay(5, "gate-bound")
    wait_for(lambda: r.state == "PROGRESS", 10, "the reported state")
    wait_for(lambda: r.info == {"current": 5, "total": 5}, 5, "the last report")
    assert r.result == r.info and not r.ready()
    assert '<progress value="5" max="5"' in r._repr_html_(), "the static badge draws the bar too"
    lab.connection.rpush("gate-bound", 1)
    assert r.get(timeout=10) == 5
    assert r.state == "SUCCESS" and r.info == 5, "once it ends, its outcome's"
    assert "<progress" not in r._repr_html_()


def test_a_task_class_reports_too_and_a_later_attempt_starts_afresh(t, lab):
    lab.workers(1)
    steps = t["Steps"].delay(3, "gate-steps")
    wait_for(lambda: steps.state == "STEP" and steps.info == {"current": 3, "total": 3}, 10, "the class's report")
    retried = t["retried"].delay("gate-retried")
    lab.connection.rpush("gate-steps", 1)
    assert steps.get(timeout=10) == "done"
    wait_for(lambda: retried.retries == 1 and retried.state == "STARTED", 10, "the second attempt to start")
    assert retried.info is None, "the first attempt's report is not the second's"
    lab.connection.rpush("gate-retried", 1)
    assert retried.get(timeout=10) == "second attempt"


def test_a_task_reports_for_another_task_by_id(t, lab):
    lab.workers(2)
    target = t["rows"].delay("gate-other")
    wait_for(lambda: target.state == "LOADING", 10, "the target to run")
    nudger = t["report_for"].delay(target.id)
    assert nudger.get(timeout=10) == "reported"
    wait_for(lambda: target.state == "NUDGED", 5, "the report made for it")
    assert target.info == {"by": nudger.id}
    lab.connection.rpush("gate-other", 1)
    assert target.get(timeout=10) == "loaded"


def test_ten_thousand_reports_cost_a_few_writes_and_the_last_one_is_kept(t, lab, report_writes):
    lab.workers(1)
    r = AsyncResult("ten-thousand", lab)
    writes = report_writes(r.id)
    started = time.monotonic()
    r = t["count"].apply_async((10_000, "gate-many"), task_id=r.id)
    wait_for(lambda: r.info == {"current": 10_000, "total": 10_000}, 20, "the last of 10,000 reports")
    elapsed = time.monotonic() - started
    assert r.state == "PROGRESS", "the task still runs: the last report was written while it did"
    wait_for(lambda: report_writes.count()["set"] >= 1, 5, "the writes to be counted")
    assert 1 <= writes["set"] <= 2 + 5 * elapsed, f"at most a few writes a second: {writes} in {elapsed:.2f} s"
    lab.connection.rpush("gate-many", 1)
    assert r.get(timeout=10) == 10_000


def test_each_report_is_written_when_reports_are_rare(t, lab, report_writes):
    lab.workers(1)
    r = AsyncResult("rare", lab)
    report_writes(r.id)
    r = t["rows"].apply_async(("gate-rare",), task_id=r.id)
    wait_for(lambda: r.state == "LOADING" and report_writes.count()["set"] == 1, 10, "one report, one write")
    lab.connection.rpush("gate-rare", 1)
    assert r.get(timeout=10) == "loaded"


def test_bad_reports_fail_the_task_with_what_to_do(t, lab):
    lab.workers(1)
    with pytest.raises(StateReportError, match=r"final state comes from its outcome.*'PROGRESS'"):
        t["final_state"].delay().get(timeout=10)
    with pytest.raises(StateReportError, match=r"meta \(a builtins.dict\) cannot be serialised.*plain data"):
        t["unserialisable"].delay().get(timeout=10)
    with pytest.raises(StateReportError, match="outside a running task"):
        t["count"].update_state(state="PROGRESS", meta={})
    with pytest.raises(StateReportError, match="non-empty string"):
        t["count"].update_state(state=None)


def test_an_eager_run_keeps_no_state(t, lab):
    applied = t["reports_and_returns"].apply((3,), task_id="eager-run")
    assert applied.state == "SUCCESS" and applied.get() == 3
    assert not lab.connection.exists(keys.report_key("eager-run"))


def test_the_badge_draws_the_reported_progress_and_ends_full(t, lab):
    lab.workers(1)
    r = t["count"].delay(8, "gate-badge", 2)
    badge = live_badge(r)
    wait_for(lambda: badge.bar.value == 8 and badge.bar.max == 8, 10, "the badge's bar to fill with the reports")
    assert badge.bar.layout.display is None and "PROGRESS" in badge.label.value and "8 / 8" in badge.count.value
    assert badge.bar.bar_style == ""
    lab.connection.rpush("gate-badge", 1)
    wait_for(lambda: "SUCCESS" in badge.label.value, 10, "the badge to show the outcome")
    assert badge.bar.bar_style == "success" and badge.bar.value == 8
    badge.widget.close()


def test_the_badge_reads_the_meta_keys_it_is_given(t, lab):
    lab.workers(1)
    r = t["rows"].delay("gate-keys")
    plain = live_badge(r)
    named = live_badge(r, current="rows", total="n_rows")
    wait_for(lambda: named.bar.value == 3 and named.bar.max == 4, 10, "the named keys' bar")
    assert plain.bar.layout.display == "none", "no current/total: no bar"
    assert "3 / 4" in named.count.value
    lab.connection.rpush("gate-keys", 1)
    assert r.get(timeout=10) == "loaded"
    for badge in (plain, named):
        badge.widget.close()


def test_the_monitor_shows_a_running_tasks_progress(t, lab):
    lab.workers(1)
    r = t["count"].delay(4, "gate-monitor")
    wait_for(lambda: r.info == {"current": 4, "total": 4}, 10, "the report")
    monitor = Monitor(lab, plots=False)
    wait_for(lambda: monitor.read()["progress"].get(r.id) == ("PROGRESS", 4.0, 4.0), 10, "the worker's job")
    monitor.refresh()
    assert '<progress value="4" max="4"' in monitor.workers.value and "4/4 PROGRESS" in monitor.workers.value
    lab.connection.rpush("gate-monitor", 1)
    assert r.get(timeout=10) == 4
    wait_for(lambda: not monitor.read()["progress"], 10, "no running task to show")


def test_a_report_signed_with_another_key_is_not_read(t, lab):
    lab.workers(1)
    r = t["rows"].delay("gate-forged")
    wait_for(lambda: r.state == "LOADING", 10, "the report")
    lab.connection.set(keys.report_key(r.id), b"not signed")
    assert r.state == "STARTED" and r.info is None
    lab.connection.rpush("gate-forged", 1)
    assert r.get(timeout=10) == "loaded"


def test_a_task_that_is_not_registered_cannot_report():
    class Loose(tasklab.Task):
        def run(self) -> None:
            pass

    with pytest.raises(StateReportError, match="outside a running task"):
        Loose().update_state(state="PROGRESS")
