"""Benchmarks: scripts that print numbers from the rehearsal guests; nothing here is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sandbox.rehearse import Rehearsal
from sandbox.testbed import Testbed


@contextmanager
def deployed(stack: str = "prod", testbed: Testbed | None = None) -> Iterator[Rehearsal]:
    """The stack deployed on quiet rehearsal guests, taken down afterwards whatever happens."""
    testbed = testbed or Testbed(log=lambda _m: None)
    reh = Rehearsal(stack, testbed, echo=lambda _m: None)
    try:
        reh.prepare()
        reh.run_program("first")
        yield reh
    finally:
        testbed.down()
