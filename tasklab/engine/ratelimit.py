"""``rate_limit="10/m"``: jobs of a task start at most that often, across every worker.

Celery enforces a rate per worker with a token bucket of one token, so runs are spaced
evenly. tasklab keeps the bucket in Redis: at submit, each job takes the next free start
slot of its task (one Lua call for a whole batch); a job whose slot is in the future is
scheduled for it and shows the state RATE_LIMITED until then.
"""

from __future__ import annotations

import time

import redis

from ..core.options import rate_interval

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


def key_for(namespace: str, task_name: str) -> str:
    return f"tasklab:rate:{namespace}:{task_name}"


def take_slots(connection: redis.Redis, key: str, rate: str, count: int) -> list[float]:
    """Reserve start times for ``count`` jobs under ``rate``; the first may be now."""
    now = time.time()
    slots = connection.eval(_TAKE_SLOTS, 1, key, repr(now), repr(rate_interval(rate)), count)
    return [float(s) for s in slots]
