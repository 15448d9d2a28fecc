"""Transactions sent as one script call behave as redis-py's MULTI/EXEC pipelines do."""

from __future__ import annotations

import pytest
import redis

from tasklab.engine import transaction


def test_commands_run_in_order_and_give_exec_replies(lab):
    conn = lab.connection
    with conn.pipeline() as pipe:
        pipe.set("t:a", "1")
        pipe.incrby("t:a", 41)
        pipe.hset("t:h", mapping={"x": b"\x00\xff", "y": 2.5})
        pipe.hgetall("t:h")
        pipe.get("t:missing")
        replies = transaction.execute(conn, pipe)
    assert replies[1] == 42 and replies[2] == 2
    assert dict(zip(replies[3][::2], replies[3][1::2], strict=True)) == {b"x": b"\x00\xff", b"y": b"2.5"}
    assert replies[4] is None
    assert conn.get("t:a") == b"42"


def test_the_first_error_is_raised_after_every_command_ran(lab):
    """As EXEC: a command that fails does not stop the others, and the error is raised."""
    conn = lab.connection
    conn.set("t:text", "not a number")
    with conn.pipeline() as pipe:
        pipe.incr("t:text")
        pipe.set("t:after", "ran")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            transaction.execute(conn, pipe)
    assert conn.get("t:after") == b"ran"


def test_a_server_without_the_script_gets_its_text(lab):
    conn = lab.connection
    conn.script_flush()
    assert conn.script_exists(transaction.COMMANDS.sha) == [False]
    with conn.pipeline() as pipe:
        pipe.set("t:k", "v")
        assert transaction.execute(conn, pipe) == [b"OK"]
    assert conn.script_exists(transaction.COMMANDS.sha) == [True]


def test_hset_if_exists_leaves_a_missing_hash_missing(lab):
    conn = lab.connection
    conn.hset("t:there", "a", "1")
    for run in (transaction.execute, lambda _conn, pipe: transaction.execute_plainly(pipe)):
        with conn.pipeline() as pipe:
            pipe.execute_command(transaction.HSET_IF_EXISTS, "t:there", "b", "2")
            pipe.execute_command(transaction.HSET_IF_EXISTS, "t:gone", "b", "2")
            run(conn, pipe)
        assert conn.hgetall("t:there") == {b"a": b"1", b"b": b"2"}
        assert not conn.exists("t:gone")
        conn.hdel("t:there", "b")


def test_large_or_watching_pipelines_go_through_multi_exec(lab):
    conn = lab.connection
    members = [f"m{i}" for i in range(transaction.MAX_COMMAND_ARGS + 1000)]
    with conn.pipeline() as pipe:
        pipe.sadd("t:many", *members)
        assert transaction.execute(conn, pipe) == [len(members)]
    big = b"x" * (transaction.MAX_SCRIPT_BYTES + 1)
    with conn.pipeline() as pipe:
        pipe.set("t:big", big)
        transaction.execute(conn, pipe)
    assert conn.strlen("t:big") == len(big)

    conn.set("t:watched", "0")
    with conn.pipeline() as pipe:
        pipe.watch("t:watched")
        conn.set("t:watched", "changed by someone else")
        pipe.multi()
        pipe.set("t:watched", "mine")
        with pytest.raises(redis.WatchError):
            transaction.execute(conn, pipe)
    assert conn.get("t:watched") == b"changed by someone else"
