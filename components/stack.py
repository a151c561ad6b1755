"""build(settings): the whole program, from one validated Settings object to resources."""

from __future__ import annotations

from config import Settings

from . import preflight


def build(settings: Settings) -> None:
    """What `__main__.py` runs: the checks that read the world, then every resource."""
    preflight.run(settings)
    register(settings)


def register(settings: Settings) -> None:
    # Imported here: each target loads only its own providers' modules.
    if settings.target == "hetzner":
        from .hetzner.stack import build_hetzner

        build_hetzner(settings)
    else:
        from .aws.stack import build_aws

        build_aws(settings)
