"""Reading the event stream (see :mod:`tasklab.engine.events`) as columns, for pandas.

A history of 100,000 attempts is about 300,000 stream entries. redis-py turns each entry of an
XRANGE reply into a dict, and decoding them took seconds of Python. Here the reply is taken as
hiredis parses it (lists of bytes), and each event's record (one line of text) is handed to
pandas' CSV parser, which makes the columns in C. Entries of the stream's earlier form (a field
per event field) have their names and values laid out flat, and each field becomes a column with
numpy's indexing.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import operator
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import redis

from .. import defaults
from ..engine import events

#: The fields an event may carry (see :func:`tasklab.engine.events.emit` and its callers).
FIELDS = events.FIELDS
#: Those that hold numbers: read as floats (NaN where absent); the others as text.
NUMBERS = ("ts", "n", "run", "next", "at")
#: The fields every event begins with, in this order (see :func:`tasklab.engine.events.emit`).
_LEADING = ("e", "id", "t", "ns", "ts")


def bound(when: Any, default: str) -> str:
    """A stream id bound for ``when``: a datetime, or seconds ago as a number, or ``None``."""
    if when is None:
        return default
    if isinstance(when, int | float):
        when = datetime.now(timezone.utc).timestamp() - when
    elif isinstance(when, datetime | pd.Timestamp):
        stamp = pd.Timestamp(when)
        when = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()
    return str(int(float(when) * 1000))


def read_columns(connection: redis.Redis, since: Any = None, until: Any = None) -> pd.DataFrame:
    """Every event between ``since`` and ``until``, oldest first: one row per event, a column per
    field of :data:`FIELDS`: text, missing where an event has no such field, or for :data:`NUMBERS`
    floats, NaN where it has none. A batch's SUBMITTED event is a row per job."""
    raw = _raw_client(connection, "XRANGE")
    start, end, chunk = bound(since, "-"), bound(until, "+"), defaults.HISTORY_READ_CHUNK
    parts: list[Future[pd.DataFrame]] = []
    # Each chunk is parsed on a thread while the next is read: pandas' tokenizer lets go of the
    # GIL (read one after the other, 100,000 attempts took ~15% longer here).
    with no_collection(), ThreadPoolExecutor(1, thread_name_prefix="tasklab-history") as parser:
        while True:
            reply = raw.execute_command("XRANGE", events.STREAM, start, end, "COUNT", chunk)
            entries = _Entries()
            entries.add(reply)
            parts.append(parser.submit(entries.frame))
            if len(reply) < chunk:
                break
            start = "(" + reply[-1][0].decode()
        frames = [part.result() for part in parts]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_recent_columns(connection: redis.Redis, count: int) -> pd.DataFrame:
    """The last ``count`` events, oldest first, as :func:`read_columns` returns them: a read whose
    cost does not grow with the history."""
    raw = _raw_client(connection, "XREVRANGE")
    entries = _Entries()
    with no_collection():
        entries.add(raw.execute_command("XREVRANGE", events.STREAM, "+", "-", "COUNT", count)[::-1])
        return entries.frame()


def _raw_client(connection: redis.Redis, *commands: str) -> redis.Redis:
    """A client of ``connection``'s connections whose replies to ``commands`` are left as hiredis parses them."""
    raw = redis.Redis(connection_pool=connection.connection_pool)
    for command in commands:
        raw.response_callbacks.pop(command, None)
    return raw


class _Entries:
    """Stream entries gathered oldest first: records (see :data:`tasklab.engine.events.RECORD`) and
    entries of the stream's earlier form, each kept in its place."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.earlier: list[tuple[int, Any, list[Any]]] = []
        self._key = events.RECORD.encode()

    def add(self, reply: list[Any]) -> None:
        pairs = list(map(_second, reply))
        if all(map(self._key.__eq__, map(_first, pairs))):  # all records: taken in C, without a loop of Python
            self.records.extend(map(_second, pairs))
            return
        for entry_id, fields in reply:
            if fields[0] == self._key:
                self.records.append(fields[1])
            else:
                self.earlier.append((len(self.records) + len(self.earlier), entry_id, fields))

    def frame(self) -> pd.DataFrame:
        """The entries as columns; a batch's submit as a row per job (see :func:`expand`)."""
        frame = _parse(self.records)
        if self.earlier:
            earlier = self.earlier
            others = _columns([e[1] for e in earlier], [e[2] for e in earlier]).drop(columns="stream_id")
            place = np.ones(len(self.records) + len(earlier), dtype=bool)
            place[[e[0] for e in earlier]] = False
            frame.index, others.index = np.flatnonzero(place), np.flatnonzero(~place)
            frame = pd.concat([frame.astype(object), others.astype(object)]).sort_index(kind="stable")
            frame = frame.astype({field: np.float64 for field in NUMBERS}).reset_index(drop=True)
        return expand(frame)


_first, _second = operator.itemgetter(0), operator.itemgetter(1)

#: How pandas' CSV parser reads each field: text as text, :data:`NUMBERS` as floats.
_TYPES: dict[str, Any] = {field: (np.float64 if field in NUMBERS else object) for field in FIELDS}


def _parse(records: list[bytes]) -> pd.DataFrame:
    """Event records (see :data:`tasklab.engine.events.RECORD`) as columns; only an empty field is
    missing (a task named "NA" stays a name)."""
    if not records:
        return pd.DataFrame({field: pd.Series(dtype=_TYPES[field]) for field in FIELDS})
    return pd.read_csv(
        io.BytesIO(b"\n".join(records)), sep=events.SEPARATOR, header=None, names=list(FIELDS),
        quoting=csv.QUOTE_MINIMAL, engine="c", dtype=_TYPES, keep_default_na=False, na_values=[""],
    )  # fmt: skip


def expand(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each batch's SUBMITTED event (see :data:`tasklab.engine.events.MORE`) made one
    row per job of the batch, in the batch's order, without the ``more`` column."""
    more = frame[events.MORE]
    batches = more.notna().to_numpy()
    if not batches.any():
        return frame.drop(columns=events.MORE)
    ids = frame["id"].astype(object)
    ids[batches] = (frame["id"][batches] + " " + more[batches]).str.split(" ")
    return frame.assign(id=ids).explode("id", ignore_index=True).drop(columns=events.MORE)


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused: a reply of millions of new objects (none of them in
    a cycle) would otherwise set it off again and again, which took four fifths of the read."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _columns(ids: list[Any], pairs: list[list[Any]]) -> pd.DataFrame:
    """Events given as their ids and their flat ``[name, value, ...]`` lists, as columns."""
    count = len(ids)
    lengths = np.fromiter((len(p) // 2 for p in pairs), dtype=np.int64, count=count)
    flat = np.fromiter(itertools.chain.from_iterable(pairs), dtype=object, count=int(lengths.sum()) * 2)
    names, values = flat[0::2], flat[1::2]
    first = np.cumsum(lengths) - lengths  # where each event's fields begin
    entry = np.repeat(np.arange(count), lengths)
    data: dict[str, Any] = {"stream_id": np.array(ids, dtype=object)}
    # emit() writes the same first fields, in the same order, in every event: taken by position
    # when every event has them there, which spares a search of all the names for each.
    fixed = 0
    while fixed < len(_LEADING) and count and bool(np.all(lengths > fixed)):
        if not np.all(names[first + fixed].astype("S16") == _LEADING[fixed].encode()):
            break
        data[_LEADING[fixed]] = _column(_LEADING[fixed], np.arange(count), values[first + fixed], count)
        fixed += 1
    others = np.ones(len(names), dtype=bool)
    for position in range(fixed):
        others[first + position] = False
    rest = np.flatnonzero(others)
    rest_names = names[rest].astype("S16")  # fixed width: compared in C, with no hashing
    for field in FIELDS:
        if field not in data:
            where = rest[rest_names == field.encode()]
            data[field] = _column(field, entry[where], values[where], count)
    return pd.DataFrame(data, columns=["stream_id", *FIELDS])


def _column(field: str, rows: np.ndarray, present: np.ndarray, count: int) -> np.ndarray:
    """One field's column: its values ``present`` in events ``rows``; missing elsewhere."""
    if field in NUMBERS:
        column: np.ndarray = np.full(count, np.nan)
        column[rows] = np.fromiter(map(float, present), dtype=np.float64, count=len(present))
        return column
    column = np.full(count, None, dtype=object)  # few distinct values (but ids): decode each once
    value_codes, distinct = pd.factorize(present)
    column[rows] = np.array([_text_of(v) or None for v in distinct], dtype=object)[value_codes]
    return column


def _text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
