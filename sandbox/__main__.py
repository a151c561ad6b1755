"""python -m sandbox {render,rehearse,down}: run pgstack without a cloud."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_render = sub.add_parser("render", help="write the resources and scripts `pulumi up` would use")
    p_render.add_argument("--stack", required=True)
    p_render.add_argument("--out", required=True, type=Path)
    p_reh = sub.add_parser("rehearse", help="run the program against local guest machines and S3 (root)")
    p_reh.add_argument("--stack", required=True)
    p_reh.add_argument("--keep", action="store_true", help="leave the guests running (then: sandbox down)")
    p_reh.add_argument("--twice", action="store_true", help="run the program a second time: nothing may change")
    p_reh.add_argument("--reboot", action="store_true", help="also reboot the guests and check PostgreSQL is back")
    p_reh.add_argument("--scenario", default="deploy", help="deploy (default), pitr, import; list: what each shows")
    p_reh.add_argument("--report", type=Path, help="write the JSON report here")
    sub.add_parser("down", help="tear down what a --keep rehearsal left running")
    args = parser.parse_args(argv)

    from config import ConfigError

    try:
        if args.cmd == "render":
            from . import render

            result = render.render(args.stack, args.out)
            print(f"rendered {len(result.mocks.registrations)} resources of stack {args.stack} into {args.out}")
            return 0
        if args.cmd == "rehearse":
            from . import rehearse

            return rehearse.main(args)
        if args.cmd == "down":
            from .testbed import Testbed

            Testbed().down()
            return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .render import LeakError

        if isinstance(exc, LeakError):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise
    return 1


if __name__ == "__main__":
    sys.exit(main())
