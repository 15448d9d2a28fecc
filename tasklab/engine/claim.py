"""How a worker takes its next job: one Lua script that runs the worker's bookkeeping commands
and then takes the job, in one round trip (see :class:`tasklab.engine.worker.Worker`)."""

from __future__ import annotations

from .transaction import FENCED, RUN_COMMANDS_LUA, Script

# Take the first waiting job and read its hash. As RQ's dequeue_any: a worker of one queue
# moves the job to that queue's intermediate list (RQ's LMOVE; KEYS are then the queue and its
# intermediate list), one of several queues pops the first non-empty queue in order (RQ's LPOP).
# A job whose hash is gone comes back with no fields, and the caller takes the next one, as RQ
# does. Given the suspension key, it takes nothing while workers are suspended (RQ checks before
# dequeuing).
_POP_JOB_LUA = """
local function pop_job(queue_keys, move, job_prefix, suspension_key)
    if suspension_key ~= '' and redis.call('EXISTS', suspension_key) == 1 then
        return false
    end
    if move == '1' then
        local job_id = redis.call('LMOVE', queue_keys[1], queue_keys[2], 'LEFT', 'RIGHT')
        if job_id then
            return {queue_keys[1], job_id, redis.call('HGETALL', job_prefix .. job_id)}
        end
        return false
    end
    for _, queue_key in ipairs(queue_keys) do
        local job_id = redis.call('LPOP', queue_key)
        if job_id then
            return {queue_key, job_id, redis.call('HGETALL', job_prefix .. job_id)}
        end
    end
    return false
end
"""

#: A worker's bookkeeping commands (see :mod:`tasklab.engine.transaction`, fence included), then,
#: optionally, the next job, taken by ``pop_job`` above, its reply appended to theirs; with no commands, one round
#: trip that only takes a job. KEYS: queue keys to take a job from (none: take nothing), or the
#: queue and its intermediate list; ARGV: '1' to move the job into the intermediate list ('0' to
#: pop it), job key prefix, suspension key or '', then the commands.
TRANSACTION = Script(
    _POP_JOB_LUA
    + RUN_COMMANDS_LUA
    + f"""
local replies = run_commands(4)
if not replies then
    return '{FENCED.decode()}'
end
if #KEYS > 0 then
    replies[#replies + 1] = pop_job(KEYS, ARGV[1], ARGV[2], ARGV[3])
end
return replies
"""
)
