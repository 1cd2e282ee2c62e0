"""Check a built wheel's file list: the package, its built-in model, configs and data files, and nothing else.

    python .ci/wheel_contents.py dist/hawk_vlm-*.whl [--tree hawk_cli]

Three checks, each failure one line naming the file:
- every file in the wheel matches the allow-list below (no tests, docs, training scripts, caches, stray files);
- every file of the source package (`--tree`, caches left out) is in the wheel, so a sub-folder that setuptools
  would silently skip (no __init__.py, a data file no package-data glob names) is caught;
- the licence files and the typing marker are there.
On success it prints a summary: file count, wheel size, and the files per group.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

DIST_INFO = r"hawk_vlm-[^/]+\.dist-info"
ALLOWED: dict[str, str] = {
    "modules": r"hawk_cli/(?:[a-z0-9_]+/)*[a-z0-9_]+\.py",
    "typing marker": r"hawk_cli/py\.typed",
    "built-in model": r"hawk_cli/builtin/[A-Za-z0-9_]+\.(?:json|jinja|safetensors|md)",
    "model configs": r"hawk_cli/data/configs/[A-Za-z0-9_.-]+\.json",
    "digit glyphs": r"hawk_cli/synthetic/data/(?:optdigits_8x8\.npz|README\.md)",
    "harness task configs": r"hawk_cli/integrations/lmms_eval/tasks/[a-z0-9_]+/[a-z0-9_]+\.yaml",
    "licence files": DIST_INFO + r"/licenses/(?:LICENSE|NOTICE)",
    "metadata": DIST_INFO + r"/(?:METADATA|WHEEL|RECORD|entry_points\.txt|top_level\.txt)",
}
REQUIRED = ("hawk_cli/py.typed", "licenses/LICENSE", "licenses/NOTICE")
CACHES = ("__pycache__", ".pyc", ".pyo", ".DS_Store")


def group_of(name: str) -> str | None:
    """The allow-list group a wheel entry belongs to, or None when nothing allows it."""
    return next((group for group, pattern in ALLOWED.items() if re.fullmatch(pattern, name)), None)


def package_files(tree: Path) -> list[str]:
    """The source package's files as wheel paths (`hawk_cli/...`), caches left out."""
    return sorted(
        f"{tree.name}/{p.relative_to(tree).as_posix()}"
        for p in tree.rglob("*")
        if p.is_file() and not any(part in CACHES or part.endswith(CACHES) for part in p.parts)
    )


def problems(names: list[str], tree_files: list[str] | None) -> list[str]:
    """Every reason the wheel with these entries is wrong, one line each; empty when it is right."""
    found = [f"not allowed in the wheel: {n}" for n in names if not n.endswith("/") and group_of(n) is None]
    found += [f"missing from the wheel: {r}" for r in REQUIRED if not any(n.endswith(r) for n in names)]
    if tree_files is not None:
        present = set(names)
        found += [f"in the source package but not in the wheel: {f}" for f in tree_files if f not in present]
    return found


def summary(wheel: Path, names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[group_of(name) or "?"] = counts.get(group_of(name) or "?", 0) + 1
    size = wheel.stat().st_size
    groups = ", ".join(f"{group} {n}" for group, n in counts.items())
    return f"{wheel.name}: {len(names)} files, {size:,} bytes ({size / 2**20:.1f} MiB); {groups}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--tree", type=Path, help="the source package folder the wheel was built from")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    tree_files = package_files(args.tree) if args.tree else None
    found = problems(names, tree_files)
    for line in found:
        print(f"wheel_contents: {line}", file=sys.stderr)
    if not found:
        print(summary(args.wheel, names))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
