"""A step that fails is reported once, as the exception the run raises, not as dozens of tracebacks."""

from __future__ import annotations

import gc

import pytest

from sandbox import program
from tests.conftest import run_stack


class FailingStep(program.RecordingMocks):
    def __init__(self, suffix: str):
        super().__init__()
        self.suffix = suffix

    def provide(self, reg: program.Registration, rid: str):
        if reg.name.endswith(self.suffix):
            raise RuntimeError(f"step failed: {reg.name}")
        return super().provide(reg, rid)


@pytest.mark.parametrize("step", ["primary-configure", "replica-1-replica"])
def test_a_failed_step_is_reported_once(step, capfd, caplog):
    for _ in range(2):  # the noise came when a later run replaced the loop of a failed one
        with pytest.raises(RuntimeError, match=f"step failed: prod-g1-{step}"):
            run_stack("prod", mocks=FailingStep(step))
    run_stack("prod")
    gc.collect()
    # asyncio reports unread exceptions through logging (caplog) when run by pytest.
    err = capfd.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert "never retrieved" not in err, err[:2000]
    assert "also failed" not in err
