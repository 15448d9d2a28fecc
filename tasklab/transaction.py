"""Transactions as one script call: what MULTI ... EXEC does, with one reply instead of many.

redis-py sends a transaction as MULTI, the commands and EXEC, and reads a ``QUEUED`` reply for
every command before the real replies; it packs each command in Python. For the writes tasklab
repeats for every job (a worker's start and finish, a batch of submitted jobs), that Python is
a large part of the job's cost. Here the commands queued on a redis-py pipeline, by RQ's own
functions or tasklab's, are sent as the arguments of one call of a small Lua script that runs
them in order, atomically (a script runs alone, as a transaction does) and returns the list of
their replies, errors included, as EXEC does. hiredis packs the call in one piece.

A script is sent by its SHA1; a server that does not know it (new, restarted or flushed) says
so before running anything, and gets the script's text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import hiredis
import redis
from redis.client import Pipeline
from redis.connection import AbstractConnection

#: Lua: ``run_commands(first)`` runs the commands in ARGV from index ``first``, each given as
#: its number of arguments followed by its arguments, and returns their replies in a list.
RUN_COMMANDS_LUA = """
local function run_commands(first)
    local replies = {}
    local i = first
    while i <= #ARGV do
        local n = tonumber(ARGV[i])
        replies[#replies + 1] = redis.pcall(unpack(ARGV, i + 1, i + n))
        i = i + n + 1
    end
    return replies
end
"""


class Script:
    """A Lua script, called by SHA1 on a connection, with its text sent when Redis lacks it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def send(self, conn: AbstractConnection, args: list) -> None:
        """Send a call with ``args`` (``numkeys``, the keys, then ARGV), without reading its reply."""
        conn.send_packed_command([pack("EVALSHA", self.sha, *args)])

    def receive(self, conn: AbstractConnection, args: list) -> Any:
        """Read the reply to the call :meth:`send` sent with ``args``."""
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # nothing ran
            conn.send_packed_command([pack("EVAL", self.text, *args)])
            return conn.read_response()

    def call(self, conn: AbstractConnection, args: list) -> Any:
        """Send a call and read its reply, retried on a lost connection as redis-py retries."""

        def send_and_receive() -> Any:
            self.send(conn, args)
            return self.receive(conn, args)

        try:
            return conn.retry.call_with_retry(send_and_receive, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()  # a reply may be left unread
            raise


#: Runs the commands given as ARGV (see :data:`RUN_COMMANDS_LUA`); no keys.
COMMANDS = Script(RUN_COMMANDS_LUA + "return run_commands(1)\n")


def pack(*args: object) -> bytes:
    """One command in Redis's protocol, packed by hiredis (C) instead of redis-py (Python).
    It takes the types redis-py's encoder takes: bytes, str, int, float and memoryview."""
    return hiredis.pack_command(args)


def take_commands(pipe: Pipeline) -> list[tuple]:
    """The commands queued on ``pipe``, which is emptied."""
    commands = [command for command, _options in pipe.command_stack]
    pipe.reset()
    return commands


def flatten(commands: list[tuple], into: list) -> list:
    """Append ``commands`` to ``into`` as :data:`RUN_COMMANDS_LUA` reads them."""
    for command in commands:
        into.append(len(command))
        into.extend(command)
    return into


def checked(replies: Any, expected: int) -> list:
    if not isinstance(replies, list) or len(replies) != expected:
        raise redis.ResponseError(f"Unexpected reply to a transaction of {expected} commands: {replies!r:.200}")
    return replies


def raise_first_error(replies: list) -> None:
    """Raise the first error among a transaction's replies, as ``pipe.execute()`` does."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def execute(client: redis.Redis, pipe: Pipeline) -> list:
    """Run the commands queued on ``pipe`` as one atomic call, on a connection of ``client``'s
    pool; their replies as Redis gave them (without redis-py's response callbacks). Raises
    the first error among them, as ``pipe.execute()`` does."""
    commands = take_commands(pipe)
    if not commands:
        return []
    args = flatten(commands, [0])
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        replies = checked(COMMANDS.call(conn, args), len(commands))
    finally:
        pool.release(conn)
    raise_first_error(replies)
    return replies
