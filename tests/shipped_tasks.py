"""Tasks of an importable module: they ship by import path, not by source."""

import tasklab


@tasklab.task
def add(a, b):
    return a + b


class Multiply(tasklab.Task):
    queue = "maths"

    def run(self, a, b):
        return a * b


@tasklab.task
def chatty(x):
    print("chatty says", x)
    return x


@tasklab.task
def own_status(gate=None):
    """The status Redis holds for the job running this task, read as the task runs (after its
    ``gate`` opens, if given: a list the test pushes to), and whether the worker still had the
    reply to the job's start to read."""
    from rq import get_current_job

    job = get_current_job()
    if gate is not None:
        job.connection.blpop([gate], 20)  # released by the test: a synchronisation point, not a sleep
    return job.get_status(refresh=True), getattr(job, "_tl_confirm_start", None) is not None


@tasklab.task
def big(n):
    return b"x" * n


def plain_scale(x, factor=2):
    """A plain function: tests make it a task where they use it (``lab.task(plain_scale, ...)``)."""
    return x * factor


def plain_described(self, x):
    """A plain function for ``bind=True``: what the worker's task is called and was given."""
    return {"x": x, "name": self.name, "queue": self.request.queue, "max_retries": self.max_retries}


@tasklab.task
def stops_its_worker():
    """Asks the worker running it for a warm shutdown (SIGTERM, as a pool's stop sends), then returns."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    return "finished"
