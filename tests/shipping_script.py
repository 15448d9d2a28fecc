"""A script whose tasks ship by source (they are in ``__main__``): tests/test_shipping.py runs it as
``python shipping_script.py URL`` and reads one JSON line per case it prints."""

import functools
import json
import sys

import tasklab

# -- 1. identical bodies, different names or options: each is its own version --


@tasklab.task(bind=True, name="alpha", max_retries=1)
def describe(self):
    return [self.name, self.max_retries]


alpha = describe


@tasklab.task(bind=True, name="beta", max_retries=1)
def describe(self):
    return [self.name, self.max_retries]


beta = describe


@tasklab.task(bind=True, name="beta", max_retries=4)
def describe(self):
    return [self.name, self.max_retries]


beta_again = describe


# -- 2. an exception class written beside the task comes back as itself --


class QuotaExceeded(Exception):
    pass


@tasklab.task
def over_quota(n):
    raise QuotaExceeded(f"{n} is over the quota")


# -- 3. one class per version: the body, autoretry_for and a value pickled by value share it --


class Flaky(Exception):
    pass


class Source:
    """A module-level object the tasks use: pickled by value, it holds Flaky (through fetch's globals)."""

    def fetch(self, attempt):
        if attempt < 1:
            raise Flaky(f"attempt {attempt} failed")
        return f"fetched at attempt {attempt}"


SOURCE = Source()


@tasklab.task
def handled():
    try:
        return SOURCE.fetch(0)
    except Flaky:
        return "handled"


@tasklab.task(bind=True, autoretry_for=(Flaky,), max_retries=2, default_retry_delay=0)
def autoretried(self):
    return SOURCE.fetch(self.request.retries)


class Transient(Exception):
    """Named by one task only, whose version is the one to carry it."""


@tasklab.task(bind=True, autoretry_for=(Transient,), max_retries=2, default_retry_delay=0)
def raises_directly(self):
    if self.request.retries < 1:
        raise Transient("first attempt")
    return f"retried {self.request.retries}"


@tasklab.task
def same_class():
    return isinstance(SOURCE, Source)


# -- 4. decorators below the task's own are shipped with it --


def tagged(tag):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return [tag, fn(*args, **kwargs)]

        return wrapper

    return decorate


def doubled(fn):
    @functools.wraps(fn)
    def wrapper(x):
        return fn(x * 2)

    return wrapper


@tasklab.task
@tagged("outer")
@doubled
def decorated(x):
    return x + 1


def cached(x):
    return x


def refused_at_decoration():
    """A function wrapped by a call, not by decorators written above its def: refused when it is made a task."""
    try:
        tasklab.task(functools.lru_cache(maxsize=None)(cached))
    except tasklab.CellError as exc:
        return str(exc)
    return "accepted"


# -- 6. a task of __main__ keeps its short name --


@tasklab.task(bind=True)
def own_name(self):
    return self.name


def run(cases):
    for case, call in cases.items():
        try:
            outcome = {"value": call()}
        except Exception as exc:
            outcome = {"raised": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc)}
            if isinstance(exc, QuotaExceeded):
                outcome["is_own_class"] = True
        print(json.dumps({"case": case, **outcome}), flush=True)


if __name__ == "__main__":
    lab = tasklab.connect(sys.argv[1])
    lab.workers(1)
    try:
        run(
            {
                "alpha": lambda: alpha.delay().get(timeout=20),
                "beta": lambda: beta.delay().get(timeout=20),
                "beta_again": lambda: beta_again.delay().get(timeout=20),
                "versions": lambda: [alpha._tl_version, beta._tl_version, beta_again._tl_version],
                "over_quota": lambda: over_quota.delay(7).get(timeout=20),
                "handled": lambda: handled.delay().get(timeout=20),
                "autoretried": lambda: autoretried.delay().get(timeout=20),
                "raises_directly": lambda: raises_directly.delay().get(timeout=20),
                "same_class": lambda: same_class.delay().get(timeout=20),
                "decorated": lambda: decorated.delay(3).get(timeout=20),
                "decorated_here": lambda: decorated(3),
                "refused_at_decoration": refused_at_decoration,
                "own_name": lambda: [own_name.name, own_name.delay().get(timeout=20)],
            }
        )
    finally:
        lab.shutdown()
