"""The one exception every test bed step raises."""

from __future__ import annotations


class TestbedError(RuntimeError):
    """A test bed step failed; the message carries the command and its output."""

    __test__ = False  # not a pytest test class despite the name
