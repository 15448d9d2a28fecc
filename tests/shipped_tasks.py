"""Tasks of an importable module: they ship by import path, not by source."""

import tasklab


@tasklab.task
def add(a, b):
    return a + b


class Multiply(tasklab.Task):
    queue = "maths"

    def run(self, a, b):
        return a * b
