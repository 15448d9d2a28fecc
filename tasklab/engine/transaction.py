"""Transactions as one script call: MULTI ... EXEC's isolation, with one reply instead of many.

redis-py sends a transaction as MULTI, the commands and EXEC, and reads a ``QUEUED`` reply for
every command before the real replies; it packs each command in Python. For the writes tasklab
repeats for every job (a worker's start and finish, a batch of submitted jobs), that Python is
a large part of the job's cost. Here the commands queued on a redis-py pipeline, by RQ's own
functions or tasklab's, are sent as the arguments of one call of a small Lua script that runs
them in order, with nothing else running meanwhile (as EXEC), and returns the list of their
replies, errors included. hiredis packs the call in one piece.

Unlike EXEC, a command Redis refuses outright (unknown, wrong number of arguments) does not
abort the others: it fails alone, as a command that fails while running does under EXEC.
Lua copies a script's arguments, and takes at most a few thousand for one command, so a call
larger than :data:`MAX_SCRIPT_BYTES`, or with a command of more than
:data:`MAX_COMMAND_ARGS` arguments, goes through redis-py's MULTI/EXEC instead; so does a
pipeline that WATCHes keys, which only a transaction on its own connection can honour.

One command of tasklab's own is understood: :data:`HSET_IF_EXISTS`, an HSET that leaves a
hash that no longer exists alone (a job deleted while it ran stays deleted).

A script is sent by its SHA1; a server that does not know it (new, restarted or flushed) says
so before running anything, and gets the script's text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import hiredis
import redis
from redis.client import Pipeline
from redis.commands import CoreCommands
from redis.connection import AbstractConnection

from ..errors import TaskLabError
from .rq_private import is_watching, queued_commands, take_queued_commands

#: ``HSET_IF_EXISTS key field value [field value ...]``: HSET if ``key`` exists; else 0.
HSET_IF_EXISTS = "tasklab:hset-if-exists"
_HSET_IF_EXISTS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""

#: ``FENCE key value``, as the first command: run the transaction only if ``key`` holds ``value``
#: (a job's running mark, :func:`tasklab.engine.keys.running_key`, naming the worker's execution:
#: gone once someone else settled the job); else nothing of it runs and :class:`Fenced` is raised.
#: ``FENCE_CLAIM list id``: run it only if ``id`` could be removed from ``list`` (a worker's claimed
#: list: the job was not queued again meanwhile). The fence's own reply is 1.
#: ``FENCE_SOLE list id job_key dependents_key``: the fence of the commit of a job whose start was
#: never written (see :class:`tasklab.engine.worker.Worker`): run it only if the job is still
#: ``queued`` (not cancelled, deleted or settled) and ``id`` could be removed from the claimed
#: ``list``; else nothing runs, but the claim goes. If the job has dependents (RQ's set), nothing runs
#: and the claim stays: the reply is :data:`HAS_DEPENDENTS`, and the worker writes the start and takes
#: RQ's path. ``FENCE_QUEUED list id job_key``: the fence of such a job's start, written late: as
#: ``FENCE_SOLE`` without dependents, but a job no longer queued stays claimed (it still runs, and its
#: claim is how a revoke's termination finds it).
FENCE = "tasklab:fence"
FENCE_CLAIM = "tasklab:fence-claim"
FENCE_SOLE = "tasklab:fence-sole"
FENCE_QUEUED = "tasklab:fence-queued"
#: What a transaction stopped by its fence replies.
FENCED = b"tasklab:fenced"
#: What a transaction whose :data:`FENCE_SOLE` found dependents replies.
HAS_DEPENDENTS = b"tasklab:has-dependents"

#: Lua: ``run_commands(first)`` runs the commands in ARGV from index ``first``, each given as
#: its number of arguments followed by its arguments, and returns their replies in a list; or
#: ``false``, running nothing, when the first command is a fence whose key is gone (or, for
#: :data:`FENCE_SOLE`, :data:`HAS_DEPENDENTS` as a string).
RUN_COMMANDS_LUA = f"""
local function run_commands(first)
    local replies = {{}}
    local i = first
    if ARGV[i + 1] == '{FENCE}' then
        if redis.call('GET', ARGV[i + 2]) ~= ARGV[i + 3] then
            return false
        end
        replies[1] = 1
        i = i + tonumber(ARGV[i]) + 1
    elseif ARGV[i + 1] == '{FENCE_CLAIM}' then
        if redis.call('LREM', ARGV[i + 2], 1, ARGV[i + 3]) == 0 then
            return false
        end
        replies[1] = 1
        i = i + tonumber(ARGV[i]) + 1
    elseif ARGV[i + 1] == '{FENCE_SOLE}' or ARGV[i + 1] == '{FENCE_QUEUED}' then
        if redis.call('HGET', ARGV[i + 4], 'status') ~= 'queued' then
            if ARGV[i + 1] == '{FENCE_SOLE}' then
                redis.call('LREM', ARGV[i + 2], 1, ARGV[i + 3])
            end
            return false
        end
        if ARGV[i + 1] == '{FENCE_SOLE}' and redis.call('SCARD', ARGV[i + 5]) > 0 then
            return '{HAS_DEPENDENTS.decode()}'
        end
        if redis.call('LREM', ARGV[i + 2], 1, ARGV[i + 3]) == 0 then
            return false
        end
        replies[1] = 1
        i = i + tonumber(ARGV[i]) + 1
    end
    while i <= #ARGV do
        local n = tonumber(ARGV[i])
        if ARGV[i + 1] == '{HSET_IF_EXISTS}' then
            if redis.call('EXISTS', ARGV[i + 2]) == 1 then
                replies[#replies + 1] = redis.pcall('HSET', unpack(ARGV, i + 2, i + n))
            else
                replies[#replies + 1] = 0
            end
        else
            replies[#replies + 1] = redis.pcall(unpack(ARGV, i + 1, i + n))
        end
        i = i + n + 1
    end
    return replies
end
"""

#: Largest script call sent (its arguments are copied by Lua); larger ones use MULTI/EXEC.
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
#: Most arguments of one command in a script call (Lua's unpack takes about 8000).
MAX_COMMAND_ARGS = 4000


class Script:
    """A Lua script, called by SHA1 on a connection, with its text sent when Redis lacks it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def packed(self, args: list) -> bytes:
        """A call with ``args`` (``numkeys``, the keys, then ARGV), packed for :meth:`send`."""
        return pack("EVALSHA", self.sha, *args)

    def send(self, conn: AbstractConnection, args: list, packed: bytes | None = None) -> None:
        """Send a call with ``args``, without reading its reply."""
        conn.send_packed_command([packed if packed is not None else self.packed(args)])

    def receive(self, conn: AbstractConnection, args: list) -> Any:
        """Read the reply to the call :meth:`send` sent with ``args``."""
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # nothing ran
            conn.send_packed_command([pack("EVAL", self.text, *args)])
            return conn.read_response()

    def call(
        self,
        conn: AbstractConnection,
        args: list,
        packed: bytes | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        """Send a call and read its reply, retried on a lost connection as redis-py retries. ``meanwhile``
        runs once, after the call is sent and before its reply is read: what the caller has to do anyway
        is done while Redis runs the script (it must not use ``conn``, nor raise)."""
        pending = [meanwhile] if meanwhile is not None else []

        def send_and_receive() -> Any:
            self.send(conn, args, packed)
            while pending:
                pending.pop()()
            return self.receive(conn, args)

        try:
            return conn.retry.call_with_retry(send_and_receive, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()  # a reply may be left unread
            raise


#: Runs the commands given as ARGV (see :data:`RUN_COMMANDS_LUA`); no keys.
COMMANDS = Script(
    RUN_COMMANDS_LUA
    + f"""
local replies = run_commands(1)
if not replies then
    return '{FENCED.decode()}'
end
return replies
"""
)


class Fenced(TaskLabError):
    """Raised in a worker when a transaction about a job it ran was not applied, because the job
    was settled meanwhile (its lease ran out): the first outcome stands."""


class HasDependents(TaskLabError):
    """Raised in a worker when a transaction fenced by :data:`FENCE_SOLE` was not applied because the
    job has dependents: nothing was written, and the job is still the worker's claim."""


class Commands(CoreCommands):
    """Commands queued for one script call (see :meth:`tasklab.engine.worker.Worker._execute`), by the same
    methods as on a redis-py pipeline (``hset``, ``expire``, ``execute_command``...), which RQ's functions and
    tasklab's call; without the pipeline's connection pool and state, which such a call does not use. A
    worker queues a job's commit on one. :meth:`pipeline` gives them to a redis-py pipeline, for a call too
    large for a script."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.command_stack: list[tuple[tuple, dict]] = []  # as a pipeline's (see rq_private.queued_commands)

    def execute_command(self, *args: Any, **options: Any) -> Commands:
        self.command_stack.append((args, options))
        return self

    def reset(self) -> None:
        self.command_stack = []

    def __enter__(self) -> Commands:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reset()

    def pipeline(self) -> Pipeline:
        """A redis-py pipeline (MULTI/EXEC) of the client, with these commands queued on it; none are left here."""
        pipe = self.client.pipeline()
        for args, options in take_queued_commands(self):
            pipe.execute_command(*args, **options)
        return pipe


def pack(*args: Any) -> bytes:
    """One command in Redis's protocol, packed by hiredis (C) instead of redis-py (Python).
    It takes the types redis-py's encoder takes: bytes, str, int, float and memoryview."""
    return hiredis.pack_command(args)


def commands_of(pipe: Pipeline) -> list[tuple]:
    """The commands queued on ``pipe``."""
    return queued_commands(pipe)


def fits(commands: list[tuple], packed: bytes) -> bool:
    """Whether a script call, packed as ``packed``, may run ``commands`` (see the module's text)."""
    return len(packed) <= MAX_SCRIPT_BYTES and all(len(command) <= MAX_COMMAND_ARGS for command in commands)


def execute_plainly(pipe: Pipeline, raise_on_error: bool = True) -> list:
    """``pipe.execute()``, with :data:`HSET_IF_EXISTS` made a call of a script of its own, and a
    :data:`FENCE` checked just before (not atomically: this serves transactions too large for a
    script call)."""
    commands = queued_commands(pipe)
    fence = commands[0] if commands and commands[0][0] in (FENCE, FENCE_CLAIM, FENCE_SOLE, FENCE_QUEUED) else None
    if fence is None and not any(command[0] == HSET_IF_EXISTS for command in commands):
        return pipe.execute(raise_on_error=raise_on_error)
    queued = take_queued_commands(pipe)
    if fence is not None:
        client = redis.Redis(connection_pool=pipe.connection_pool)
        key, value = fence[1], fence[2]
        if fence[0] in (FENCE_SOLE, FENCE_QUEUED):
            if client.hget(fence[3], "status") != b"queued":
                if fence[0] == FENCE_SOLE:
                    client.lrem(key, 1, value)
                raise Fenced("the job was settled while this worker ran it")
            if fence[0] == FENCE_SOLE and client.scard(fence[4]):
                raise HasDependents("the job has dependents")
        if fence[0] in (FENCE_CLAIM, FENCE_SOLE, FENCE_QUEUED):
            held = bool(client.lrem(key, 1, value))
        else:
            held = client.get(key) == str(value).encode()
        if not held:
            raise Fenced("the job was settled while this worker ran it")
        queued = queued[1:]
    for args, options in queued:
        if args[0] == HSET_IF_EXISTS:
            pipe.eval(_HSET_IF_EXISTS_LUA, 1, *args[1:])
        else:
            pipe.execute_command(*args, **options)
    replies = pipe.execute(raise_on_error=raise_on_error)
    return [1, *replies] if fence is not None else replies


def flatten(commands: list[tuple], into: list) -> list:
    """Append ``commands`` to ``into`` as :data:`RUN_COMMANDS_LUA` reads them."""
    for command in commands:
        into.append(len(command))
        into.extend(command)
    return into


def checked(replies: Any, expected: int) -> list:
    if replies == FENCED:
        raise Fenced("the job was settled while this worker ran it")
    if replies == HAS_DEPENDENTS:
        raise HasDependents("the job has dependents")
    if not isinstance(replies, list) or len(replies) != expected:
        raise redis.ResponseError(f"Unexpected reply to a transaction of {expected} commands: {replies!r:.200}")
    return replies


def raise_first_error(replies: list) -> None:
    """Raise the first error among a transaction's replies, as ``pipe.execute()`` does."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def execute(client: redis.Redis, pipe: Pipeline) -> list:
    """Run the commands queued on ``pipe`` as one call, on a connection of ``client``'s pool;
    their replies as Redis gave them (without redis-py's response callbacks). Raises the
    first error among them, as ``pipe.execute()`` does. A pipeline that WATCHes keys, or too
    large for a script call, is executed by redis-py (see the module's text)."""
    if is_watching(pipe):
        return execute_plainly(pipe)
    commands = commands_of(pipe)
    if not commands:
        return []
    args = flatten(commands, [0])
    packed = COMMANDS.packed(args)
    if not fits(commands, packed):
        return execute_plainly(pipe)
    pipe.reset()
    replies = checked(call(client, COMMANDS, args, packed), len(commands))
    raise_first_error(replies)
    return replies


def call(client: redis.Redis, script: Script, args: list, packed: bytes | None = None) -> Any:
    """One call of ``script`` with ``args``, on a connection of ``client``'s pool; Redis's reply."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        return script.call(conn, args, packed)
    finally:
        pool.release(conn)
