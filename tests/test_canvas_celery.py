"""The examples of Celery's Canvas guide (docs.celeryq.dev, "Canvas: Designing Work-flows"), run as
written with only the imports changed (``from celery import chain`` becomes ``from tasklab import
chain``, ``from proj.tasks import add`` becomes an import of :mod:`tests.celery_canvas_tasks`), each
asserting the outcome the guide shows. The guide's ``>>>`` lines are the statements; what it prints
are the asserts.

Examples that need ``link``, by-name signatures or ``Task.signature`` are tested where those live.
"""

from __future__ import annotations

import time

import pytest

from tasklab import chain, chord, group

from .celery_canvas_tasks import add, mul, tsum, xsum
from .conftest import wait_for


@pytest.fixture
def workers(lab):
    lab.workers(2)
    return lab


def test_signatures_and_partials(workers):
    """Signatures, and Partials: calling a signature runs the task here; given arguments come first."""
    assert add(2, 2) == 4
    assert add.s(2, 2)() == 4
    assert add.s(2, 2).delay().get(timeout=10) == 4
    assert add.s(2, 2).apply_async(countdown=1).get(timeout=10) == 4
    assert add.apply_async((2, 2), countdown=1).get(timeout=10) == 4
    partial = add.s(2)  # incomplete signature
    assert partial.delay(4).get(timeout=10) == 6  # 4 + 2
    assert partial.apply_async((4,)).get(timeout=10) == 6  # same
    s = add.s(2, 2)
    assert (s.args, s.kwargs) == ((2, 2), {})
    assert add.si(2, 2).delay().get(timeout=10) == 4


def test_the_primitives_simple_chain(workers):
    """The Primitives, "Simple chain"."""
    # 2 + 2 + 4 + 8
    res = chain(add.s(2, 2), add.s(4), add.s(8))()
    assert res.get() == 16
    assert res.parent.get() == 8
    assert res.parent.parent.get() == 4

    res = (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()
    assert res.get() == 16
    assert res.parent.get() == 8
    assert res.parent.parent.get() == 4


def test_partial_chains(workers):
    """Chains: a chain given arguments passes them to its first task."""
    # (16 + 4) * 8
    c1 = add.s(4) | mul.s(8)
    res = c1(16)
    assert res.get() == 160
    # (4 + 4) * 8 * 10
    res = chain(add.s(4, 4), mul.s(8), mul.s(10))()
    assert res.get() == 640


def test_the_primitives_simple_group_and_chord(workers):
    """The Primitives, "Simple group" and "Simple chord"."""
    res = group(add.s(i, i) for i in range(10))()
    assert res.get(timeout=10) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # the guide waits 1 s on a warm worker

    res = chord((add.s(i, i) for i in range(10)), xsum.s())()
    assert res.get() == 90


def test_groups_and_group_results(workers):
    """Groups, and "Group Results": ready, successful, get, completed_count, waiting, join."""
    job = group([
        add.s(2, 2),
        add.s(4, 4),
        add.s(8, 8),
        add.s(16, 16),
        add.s(32, 32),
    ])  # fmt: skip
    result = job.apply_async()
    wait_for(result.ready, 10, "all subtasks to complete")  # the guide shows ready() once they have
    assert result.ready() is True  # have all subtasks completed?
    assert result.successful() is True  # were all subtasks successful?
    assert result.get() == [4, 8, 16, 32, 64]
    assert result.completed_count() == 5 and result.waiting() is False and result.failed() is False
    assert result.join() == [4, 8, 16, 32, 64]


def test_chords(workers):
    """Chords: by call, by header and callback, and group | callback."""
    assert chord(add.s(i, i) for i in range(100))(tsum.s()).get() == 9900
    assert sum([i + i for i in range(100)]) == 9900

    callback = tsum.s()
    header = [add.s(i, i) for i in range(100)]
    result = chord(header)(callback)
    assert result.get() == 9900

    assert (group(add.s(i, i) for i in range(100)) | tsum.s())().get() == 9900


def test_map_and_starmap(workers, lab):
    """Map & Starmap: one task calling the task for each item in turn."""
    assert ~tsum.map([range(10), range(100)]) == [45, 4950]
    assert ~add.starmap(zip(range(10), range(10))) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # noqa: B905

    later = add.starmap(zip(range(10), range(10))).apply_async(countdown=10)  # noqa: B905
    assert 9 < later.eta.timestamp() - time.time() <= 10, "one job, due in 10 s"
    later.revoke()


def test_chunks(workers, lab):
    """Chunks: parts of 10 items, each one starmap task; a group of them."""
    res = add.chunks(zip(range(100), range(100)), 10)()  # noqa: B905
    assert res.get() == [[2 * i for i in range(first, first + 10)] for first in range(0, 100, 10)]
    assert res.get()[0] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert res.get()[-1] == [180, 182, 184, 186, 188, 190, 192, 194, 196, 198]

    assert ~add.chunks(zip(range(100), range(100)), 10) == res.get()  # noqa: B905

    group = add.chunks(zip(range(100), range(100)), 10).group()  # noqa: B905
    skewed = group.skew(start=1, stop=10)()
    # "the first task will have a countdown of one second, the second task a countdown of two seconds, and so on"
    due = [result.eta.timestamp() - time.time() for result in skewed]
    assert all(n - 0.5 < seconds <= n for n, seconds in zip(range(1, 11), due, strict=True)), due
    skewed.revoke()
