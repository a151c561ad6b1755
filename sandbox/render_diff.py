"""Compare what two versions of pgstack render: `python -m sandbox.render_diff [--base REF]`.

Renders prod, staging and a stack with a restore generation (prod plus `g2` restored from `g1`)
from the git revision REF (default: main) and from the working tree, each in a copy of its own,
and prints the differences in resources.json, commands/ and outputs.json. Exit 0 when the
renders are identical, 1 when they differ. A refactoring must not change the render; a change
that does is named in the README.

Normalised before comparing, because the mocks do not promise them: the order of resources
(registrations arrive from several threads) and the mock's public addresses (handed out in
registration order). Standalone on purpose: it runs the `sandbox render` of each tree, so it
works against any revision, whatever that revision's modules are called.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STACKS = ("prod", "staging", "pitr")
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "out", ".pytest_cache", ".ruff_cache")
PUBLIC_IP = re.compile(r"203\.0\.113\.[0-9]+")


def pitr_stack(tree: Path) -> None:
    """Pulumi.pitr.yaml: prod with a generation g2 restored from g1 (to a fixed past time)."""
    data = yaml.safe_load((tree / "Pulumi.prod.yaml").read_text())
    clusters = data["config"]["pgstack:clusters"]
    clusters["g2"] = {
        "primaryIp": "10.0.1.7",
        "replicaIps": ["10.0.1.8"],
        "restore": {"from": "g1", "targetTime": "2026-11-20T10:00:00.123456+00:00"},
    }
    (tree / "Pulumi.pitr.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def checkout(base: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", base], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def render(tree: Path, stack: str, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "render", "--stack", stack, "--out", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"render of {stack} in {tree} failed:\n{proc.stdout}{proc.stderr}")


def normalised(out: Path) -> dict[str, str]:
    """File name -> comparable text."""
    files: dict[str, str] = {}
    resources = json.loads((out / "resources.json").read_text())
    resources.sort(key=lambda r: (r["type"], r["name"]))
    files["resources.json"] = json.dumps(resources, indent=2, sort_keys=True)
    files["outputs.json"] = PUBLIC_IP.sub("203.0.113.X", (out / "outputs.json").read_text())
    for path in sorted((out / "commands").iterdir()):
        files[f"commands/{path.name}"] = path.read_text()
    return files


def compare(base: str) -> int:
    differences = 0
    with tempfile.TemporaryDirectory(prefix="pgstack-render-diff-") as tmp:
        trees = {"base": Path(tmp) / "base", "work": Path(tmp) / "work"}
        checkout(base, trees["base"])
        shutil.copytree(REPO, trees["work"], ignore=IGNORED)
        for stack in STACKS:
            rendered = {}
            for side, tree in trees.items():
                if stack == "pitr":
                    pitr_stack(tree)
                render(tree, stack, Path(tmp) / side / "out" / stack)
                rendered[side] = normalised(Path(tmp) / side / "out" / stack)
            for name in sorted(set(rendered["base"]) | set(rendered["work"])):
                a, b = rendered["base"].get(name), rendered["work"].get(name)
                if a == b:
                    continue
                differences += 1
                where = f"only in {base}" if b is None else "only in the work tree" if a is None else "differs"
                print(f"--- {stack}/{name}: {where}")
                if a is not None and b is not None:
                    sys.stdout.writelines(
                        difflib.unified_diff(
                            a.splitlines(keepends=True), b.splitlines(keepends=True), f"{base}/{name}", f"work/{name}"
                        )
                    )
    print(f"render-diff against {base}: {differences} file(s) differ in {', '.join(STACKS)}")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.render_diff", description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare against (default: main)")
    return compare(parser.parse_args(argv).base)


if __name__ == "__main__":
    sys.exit(main())
