"""How a worker takes its next job: one Lua script that runs the worker's bookkeeping commands
and then takes the job, in one round trip (see :class:`tasklab.engine.worker.Worker`)."""

from __future__ import annotations

from .transaction import FENCED, RUN_COMMANDS_LUA, Script

#: What taking a job replies while workers are suspended (none waiting: ``False``; else the job).
SUSPENDED = b"tasklab:suspended"

# Take the first waiting job and read its hash: the first non-empty queue of KEYS[2..] in order
# gives its first job (RQ's order), which moves into the worker's claimed list, KEYS[1], in the
# same step (see tasklab.engine.keys.claimed_key); from a queue at least `depth` long, its first
# `batch` jobs. A job whose hash is gone comes back with no fields: the caller drops it from its
# claimed list and goes on with the next, as RQ skips it. Given the suspension key, it takes
# nothing while workers are suspended (RQ checks before dequeuing), and says so: SUSPENDED.
# Each job taken goes to the head of the claimed list, so that its last job is always the one the
# worker runs next, maybe with its start unwritten (see tasklab.engine.worker.Worker and
# tasklab.engine.lost.settle_jobs_of); the others wait before it. The reply: the queue's key, then
# each job's id and fields, in the order the worker runs them.
_POP_JOB_LUA = f"""
local function pop_job(keys, job_prefix, suspension_key, batch, depth)
    if suspension_key ~= '' and redis.call('EXISTS', suspension_key) == 1 then
        return '{SUSPENDED.decode()}'
    end
    for k = 2, #keys do
        local count = 1
        if batch > 1 and redis.call('LLEN', keys[k]) >= depth then
            count = batch
        end
        local taken = {{keys[k]}}
        for n = 1, count do
            local job_id = redis.pcall('LMOVE', keys[k], keys[1], 'LEFT', 'LEFT')
            if type(job_id) == 'table' then  -- no LMOVE before Redis 6.2
                job_id = redis.call('LPOP', keys[k])
                if job_id then
                    redis.call('LPUSH', keys[1], job_id)
                end
            end
            if not job_id then
                break
            end
            taken[#taken + 1] = job_id
            taken[#taken + 1] = redis.call('HGETALL', job_prefix .. job_id)
        end
        if #taken > 1 then
            return taken
        end
    end
    return false
end
"""

#: A worker's bookkeeping commands (see :mod:`tasklab.engine.transaction`, fence included), then,
#: optionally, the next job, taken by ``pop_job`` above, its reply appended to theirs; with no
#: commands, one round trip that only takes a job. KEYS: the worker's claimed list and the queue
#: keys to take a job from (none: take nothing); ARGV: job key prefix, suspension key or '', the
#: batch and the queue depth that gives one (see :data:`~tasklab.defaults.CLAIM_BATCH`), then the
#: commands. A transaction stopped by its fence takes no job.
TRANSACTION = Script(
    _POP_JOB_LUA
    + RUN_COMMANDS_LUA
    + f"""
local replies = run_commands(5)
if not replies then
    return '{FENCED.decode()}'
end
if type(replies) == 'string' then
    return replies
end
if #KEYS > 0 then
    replies[#replies + 1] = pop_job(KEYS, ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
end
return replies
"""
)


#: Read the job a BLMOVE has just handed to a worker: sent on the same connection right behind the
#: BLMOVE, it runs as soon as the BLMOVE is answered, so that the job's id and fields come in one round
#: trip. KEYS[1]: the worker's handed list (see tasklab.engine.keys.handed_key); ARGV[1]: the job key
#: prefix. The reply: the first id of the list and the fields of its job's hash, or false when the list
#: is empty. It moves nothing: the job joins the claimed list only once the worker has read this (a
#: worker frozen in its wait, and settled meanwhile, finds the job gone back to its queue).
PEEK_HANDED = Script("""
local job_id = redis.call('LINDEX', KEYS[1], 0)
if not job_id then
    return false
end
return {job_id, redis.call('HGETALL', ARGV[1] .. job_id)}
""")
