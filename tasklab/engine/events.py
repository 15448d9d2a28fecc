"""What happened to every task attempt, as a bounded Redis stream plus running totals.

Each state change is one entry of the stream ``tasklab:events``: submitted, started (with the
worker), retry (reason, next run time), succeeded, failed (exception type), revoked, lost.
The stream is trimmed to about :data:`defaults.EVENTS_MAXLEN` entries, and readers ask for
what is new since the last id they saw. Alongside, per namespace and task, counters of
outcomes and the last run times are kept, so a monitor can show totals and percentiles at a
cost that does not grow with the history.

An entry holds one field, :data:`RECORD`: the event's :data:`FIELDS` in their order, as one line
of text separated by :data:`SEPARATOR` (a value holding the separator, a quote or a line break is
quoted as in CSV). A history of 100,000 attempts is then 300,000 strings to read, which a CSV
parser turns into columns in C, rather than millions of field names and values
(see :mod:`tasklab.diagnostics.stream`). Entries of the earlier form, a stream field per event
field, are read too.

Events are written in the same pipeline as the other writes of the moment (the enqueue, the
attempt's output), so they cost no extra round trip there.
"""

from __future__ import annotations

import csv
import time
from typing import Any

from rq.job import Job

from .. import defaults
from . import keys

STREAM = "tasklab:events"
SUBMITTED, STARTED, RETRY, SUCCEEDED, FAILED, REVOKED, LOST = (
    "submitted",
    "started",
    "retry",
    "succeeded",
    "failed",
    "revoked",
    "lost",
)
#: An outcome a worker reached after the job was settled without it (its lease ran out): the
#: first outcome stands, and this one is kept for the record (``x`` is its state).
DUPLICATE = "duplicate"


def counts_key(namespace: str) -> str:
    """Hash ``"<task>|<kind>"`` -> number of such events, for one namespace."""
    return f"tasklab:stats:{namespace}:counts"


def runtimes_key(namespace: str, task: str) -> str:
    """List of the last :data:`defaults.RUNTIMES_KEPT` run times (seconds) of a task."""
    return f"tasklab:stats:{namespace}:runtimes:{task}"


#: The stream field that holds an event (see the module's text).
RECORD = "event"
#: What separates an event's fields in its :data:`RECORD` (the ASCII unit separator).
SEPARATOR = "\x1f"
#: An event's fields, in the order of its record: kind, task id, task name, namespace, time
#: (seconds since the epoch), attempt number, worker, queue, code version, exception type, message,
#: run time (seconds), next run time, workflow, due time, and a batch's other ids (see :data:`MORE`).
FIELDS = ("e", "id", "t", "ns", "ts", "n", "w", "q", "v", "x", "msg", "run", "next", "wf", "at", "more")
_POSITION = {name: i for i, name in enumerate(FIELDS)}
_SPECIAL = (SEPARATOR, '"', "\n", "\r")


def _text(value: Any) -> str:
    text = str(value)
    if any(c in text for c in _SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def record(
    kind: str, job_id: str, task: str, namespace: str, ts: float, fields: dict[str, Any], full: bool = False
) -> str:
    """An event as its :data:`RECORD`. ``fields`` are named by :data:`FIELDS`; ``None`` is left out, and
    so are the empty fields at the end, unless ``full`` (every field, the last one empty)."""
    values = [kind, job_id, task, namespace, repr(ts)] + [""] * (len(FIELDS) - 5)
    for name, value in fields.items():
        if value is not None:
            try:
                values[_POSITION[name]] = value
            except KeyError:
                raise ValueError(f"An event has no field {name!r}; its fields are {', '.join(FIELDS)}.") from None
    while not full and values[-1] == "":  # the empty fields at the end are left out (read as empty)
        values.pop()
    text = SEPARATOR.join(map(str, values))
    if text.count(SEPARATOR) == len(values) - 1 and '"' not in text and "\n" not in text and "\r" not in text:
        return text  # nothing to quote: one check of the whole, not one per field
    return SEPARATOR.join(map(_text, values))


def parse(text: str) -> dict[str, str]:
    """A :data:`RECORD` as a dict of its fields that have a value."""
    values = text.split(SEPARATOR) if '"' not in text else next(csv.reader([text], delimiter=SEPARATOR))
    return {name: value for name, value in zip(FIELDS, values, strict=False) if value}


class Totals:
    """Counters and run times kept by a worker for a moment and written together (:meth:`write`), so
    that a stream of short tasks does not write them once per task: the counters of
    :func:`counts_key` and the run times of :func:`runtimes_key`, and RQ's counts of the worker's
    successful jobs and working time. What is held is lost if the worker dies before writing it."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.runtimes: dict[tuple[str, str], list[str]] = {}
        self.successes = 0
        self.working_s = 0.0
        self.since = time.monotonic()  # of the oldest total held

    @property
    def held(self) -> bool:
        """Whether anything is held (run times come with counts)."""
        return bool(self.counts) or self.successes > 0

    def count(self, namespace: str, field: str) -> None:
        if not self.held:
            self.since = time.monotonic()
        key = (namespace, field)
        self.counts[key] = self.counts.get(key, 0) + 1

    def run_time(self, namespace: str, task: str, run_s: float) -> None:
        self.runtimes.setdefault((namespace, task), []).append(repr(float(run_s)))

    def success(self, working_s: float) -> None:
        self.successes += 1
        self.working_s += working_s

    def due(self) -> bool:
        """Whether the oldest total held is :data:`~tasklab.defaults.TOTALS_HELD` seconds old."""
        return self.held and time.monotonic() - self.since >= defaults.TOTALS_HELD

    def add(self, other: Totals) -> None:
        """Hold ``other``'s totals too."""
        if other.held:
            if not self.held:
                self.since = other.since
            for key, n in other.counts.items():
                self.counts[key] = self.counts.get(key, 0) + n
            for key, values in other.runtimes.items():
                self.runtimes.setdefault(key, []).extend(values)
            self.successes += other.successes
            self.working_s += other.working_s

    def write(self, pipe: Any, worker_key: str) -> None:
        """Queue what is held on ``pipe`` (RQ's counts on the hash ``worker_key``). What is held stays
        held: the caller drops it once the commit is known to be applied."""
        command = pipe.execute_command
        for (namespace, field), n in self.counts.items():
            command("HINCRBY", counts_key(namespace), field, n)
        for (namespace, task), values in self.runtimes.items():
            key = runtimes_key(namespace, task)
            command("LPUSH", key, *values[-defaults.RUNTIMES_KEPT :])
            command("LTRIM", key, 0, defaults.RUNTIMES_KEPT - 1)
        if self.successes:
            command("HINCRBY", worker_key, "successful_job_count", self.successes)
            command("HINCRBYFLOAT", worker_key, "total_working_time", repr(self.working_s))


def emit(
    pipe: Any, kind: str, job_id: str, task: str, namespace: str, ts: float | None = None,
    totals: Totals | None = None, **fields: Any,
) -> None:  # fmt: skip
    """Queue one event (and its counter) on ``pipe``, at ``ts`` (default: now). ``fields`` with
    ``None`` are left out. Given ``totals``, its counter and run time are added there instead.

    STARTED events are not counted: how many attempts run now is the size of RQ's started
    registries, and a count of all that ever started would tell nothing more.
    """
    entry = record(kind, job_id, task, namespace, time.time() if ts is None else ts, fields)
    # pipe.xadd(STREAM, {RECORD: entry}, maxlen=..., approximate=True), with less of redis-py's Python
    pipe.execute_command("XADD", STREAM, "MAXLEN", "~", defaults.EVENTS_MAXLEN, "*", RECORD, entry)
    held = totals if totals is not None else Totals()
    if kind != STARTED:
        held.count(namespace, f"{task}|{kind}")
    run_s = fields.get("run")
    if run_s is not None:
        held.run_time(namespace, task, run_s)
    if totals is None:
        held.write(pipe, worker_key="")  # now, on pipe (no worker's counts among them)


def emit_for(pipe: Any, kind: str, job: Job, **fields: Any) -> None:
    """:func:`emit` for ``job``: its task, namespace and workflow read from its meta."""
    meta = job.meta
    fields.setdefault("wf", meta.get(keys.META_WORKFLOW))
    task = meta.get(keys.META_TASK) or job.func_name or "?"
    emit(pipe, kind, job.id, task, meta.get(keys.META_NAMESPACE, "default"), **fields)


def forget(connection: Any, job_id: str, since: float | None = None) -> int:
    """Delete the events of ``job_id`` written since ``since`` (a timestamp; ``None``: the whole
    stream), when a new task takes a finished one's id; how many were deleted."""
    start = str(int(since * 1000)) if since is not None else "-"
    found: list[bytes] = []
    while True:
        chunk = connection.xrange(STREAM, start, "+", count=defaults.HISTORY_READ_CHUNK)
        # A batch's SUBMITTED entry (see MORE) stays: it is its other jobs' too, and a new submit of
        # this id is read after it.
        for entry_id, fields in chunk:
            event = decode(entry_id, fields)
            if event["id"] == job_id and MORE not in event:
                found.append(entry_id)
        if len(chunk) < defaults.HISTORY_READ_CHUNK:
            break
        start = "(" + chunk[-1][0].decode()
    return connection.xdel(STREAM, *found) if found else 0


def decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry as a dict of its event's fields that have a value (strings), with ``stream_id``
    added."""
    text = fields.get(_RECORD_KEY)
    out = parse(text.decode()) if text is not None else {k.decode(): v.decode() for k, v in fields.items()}
    out["stream_id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return out


_RECORD_KEY = RECORD.encode()

#: The field of a SUBMITTED event that stands for the submits of a whole batch (a ``map_async``):
#: the ids of its other jobs, space-separated, after the first's in ``id``. The batch's jobs share
#: its other fields, so one entry of the stream records them all.
MORE = "more"


def expand(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The events an entry stands for, as decoded: one, or a batch's SUBMITTED events, one per job."""
    more = event.get(MORE)
    if not more:
        return [event]
    return [{**event, "id": job_id} for job_id in [event["id"], *more.split(" ")]]


def decode_all(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[dict[str, Any]]:
    """Stream entries (as XRANGE gives them) decoded, each batch expanded into its jobs' events."""
    return [event for entry_id, fields in entries for event in expand(decode(entry_id, fields))]
