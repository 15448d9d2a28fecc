"""``rate_limit="10/m"``: jobs of a task start at most that often, across every worker.

Celery enforces a rate per worker with a token bucket of one token, so runs are spaced
evenly. tasklab keeps the bucket in Redis. At submit, each job takes the next free start slot
of its task (one Lua call for a whole batch, :func:`take_slots`); a job whose slot is in the
future is scheduled for it and shows the state RATE_LIMITED until then. The limit itself is
applied where it counts, when a worker is about to start a job (:func:`take_start`): the job
starts if its slot has come and the last start of its task was at least one interval ago;
else it goes back to its queue's scheduled jobs until it may (not a retry, and no failure).
The scheduler queues due jobs a fraction of a second late, unevenly: without the check at
start, two jobs could start closer than the interval.
"""

from __future__ import annotations

import time

import redis

from ..core.options import rate_interval

#: Job meta: the rate limit of the job's task, resolved at submit (``[key, rate]``).
META_RATE = "tl_rate"
#: Job meta: the start slot a job waits for (a float timestamp), once it was held back.
META_SLOT = "tl_slot"

# KEYS[1]: the task's next free slot (a float timestamp). ARGV: now, interval, count.
# Returns the start time of each of `count` jobs, as strings.
_TAKE_SLOTS = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slots = {}
for i = 1, tonumber(ARGV[3]) do
    local start = math.max(now, free)
    slots[i] = tostring(start)
    free = start + interval
end
redis.call('SET', KEYS[1], tostring(free), 'PX', math.ceil((free - now) * 1000) + 60000)
return slots
"""

# KEYS[1]: the task's next free slot; KEYS[2]: its last start (float timestamps).
# ARGV: now, interval, the slot the job holds or ''. Returns {1, now} when the job may start now
# (recorded as the last start), else {0, slot}: the slot it is given (or keeps) to start at.
_TAKE_START = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local held = tonumber(ARGV[3])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local earliest = tonumber(redis.call('GET', KEYS[2]) or '0') + interval
local keep = math.ceil(interval * 1000) + 60000
if now >= earliest and ((held and now >= held) or (not held and now >= free)) then
    redis.call('SET', KEYS[2], tostring(now), 'PX', keep)
    if free < now + interval then
        redis.call('SET', KEYS[1], tostring(now + interval), 'PX', keep)
    end
    return {1, tostring(now)}
end
if held then
    return {0, tostring(math.max(held, earliest))}
end
held = math.max(free, earliest, now)
redis.call('SET', KEYS[1], tostring(held + interval), 'PX', math.ceil((held + interval - now) * 1000) + 60000)
return {0, tostring(held)}
"""


def key_for(namespace: str, task_name: str) -> str:
    """The prefix of a task's rate-limit keys (its next free slot, and ``:last``, its last start)."""
    return f"tasklab:rate:{namespace}:{task_name}"


def take_slots(connection: redis.Redis, key: str, rate: str, count: int) -> list[float]:
    """Reserve start times for ``count`` jobs under ``rate``; the first may be now."""
    now = time.time()
    slots = connection.eval(_TAKE_SLOTS, 1, key, repr(now), repr(rate_interval(rate)), count)
    return [float(s) for s in slots]


def take_start(connection: redis.Redis, key: str, rate: str, held: float | None = None) -> float | None:
    """``None`` if a job of the task limited by ``rate`` may start now (the start is recorded), else
    the time (a timestamp) to try again at: for a job holding a slot (``held``), that slot or one
    interval after the last start, whichever is later; for one without, the next free slot, which it
    then holds."""
    now = time.time()
    allowed, when = connection.eval(
        _TAKE_START, 2, key, f"{key}:last", repr(now), repr(rate_interval(rate)), "" if held is None else repr(held)
    )
    return None if int(allowed) else float(when)
