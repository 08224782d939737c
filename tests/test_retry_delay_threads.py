"""``Upstash-Retry-Delay`` parsing from several threads at once (the dev server's).

CPython 3.11's AST constructor keeps its recursion counter per interpreter, not per thread:
when a thread's ``ast.parse`` is interrupted while it builds the tree (a finalizer runs
Python code, the GIL passes) and another thread parses meanwhile, the first one fails with
``SystemError: AST constructor recursion depth mismatch`` (CPython gh-106905). The dev server
parses on its API and delivery threads; it answered such publishes 500 under load.
"""

from __future__ import annotations

import gc
import sys
import threading

from app.qstash import retry_delay


def test_a_parse_interrupted_by_another_threads_parse_succeeds() -> None:
    """Thread A is stopped inside ``ast.parse`` (by a finalizer) while B parses: both work."""
    inside, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    class Trap:
        """Garbage in a cycle whose finalizer stops thread A once it runs inside ast.parse."""

        cycle: object

        def __del__(self) -> None:
            if inside.is_set():
                return
            if sys._getframe(1).f_globals.get("__name__") == "ast":
                inside.set()
                done.wait(1)  # B parses now (or, serialized, waits for A: 1 s)
            else:
                arm()  # collected before A reached ast.parse: set the trap again

    def arm() -> None:
        trap = Trap()
        trap.cycle = trap

    def parse(text: str) -> None:
        try:
            retry_delay.parse(text)
        except BaseException as exc:  # noqa: BLE001 - the test reports what any thread raised
            errors.append(exc)

    def first() -> None:
        arm()
        parse("pow(2, retried) * 1000")

    def second() -> None:
        inside.wait(5)
        parse("retried + 1")
        done.set()

    threshold = gc.get_threshold()
    gc.set_threshold(1)  # collect at almost every allocation: inside ast.parse too
    try:
        threads = [threading.Thread(target=second), threading.Thread(target=first)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        gc.set_threshold(*threshold)
    assert inside.is_set(), "the trap never caught thread A inside ast.parse"
    assert errors == []
