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
def own_status():
    """The status Redis holds for the job running this task, read as the task runs."""
    from rq import get_current_job

    return get_current_job().get_status(refresh=True)
