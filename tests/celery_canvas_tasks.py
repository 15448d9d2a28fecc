"""The tasks of Celery's Canvas guide (its ``proj/tasks.py``), declared with tasklab's decorator.

tests/test_canvas_celery.py imports them as the guide's examples do (``from proj.tasks import add``);
being in an importable module, they ship by import path.
"""

import tasklab


@tasklab.task
def add(x, y):
    return x + y


@tasklab.task
def mul(x, y):
    return x * y


@tasklab.task
def xsum(numbers):
    return sum(numbers)


@tasklab.task
def tsum(numbers):
    return sum(numbers)
