"""The server-start warm-up: every step runs once, a failing step does not stop the others."""
from quantlab.io import models
from quantlab.lessons import warmup


def test_steps_run_in_order_and_a_failure_is_skipped():
    ran = []

    def broken():
        ran.append("broken")
        raise RuntimeError("a step that fails")

    seconds = warmup.warm_default_views((("first", lambda: ran.append("first")), ("broken", broken),
                                         ("last", lambda: ran.append("last"))))
    assert ran == ["first", "broken", "last"]
    assert list(seconds) == ["first", "last"] and all(s >= 0 for s in seconds.values())


def test_the_default_steps_fill_the_caches_the_lessons_read():
    names = [name for name, _ in warmup.STEPS]
    assert names.index("the embedded model") < names.index("real activations on the sample text")
    steps = dict(warmup.STEPS)
    assert steps["real activations on the sample text"] is models.activations
    warmup.warm_default_views((("activations", steps["real activations on the sample text"]),))
    assert models.activations() is models.activations()  # cached once per process
