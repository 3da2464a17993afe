"""Write the plugin's pip constraints, ``sial_qgis_plugin/constraints.txt``, from this .venv.

The plugin's installer (sial_qgis_plugin/dependencies.py) installs the engine's packages into a
folder of QGIS's own and passes this file to pip, so that every package it installs, the
transitive ones included, is the version the tests ran with:

- the packages pip installed into .venv (torch and its CUDA libraries, torchvision,
  segmentation-models-pytorch, timm, huggingface-hub, safetensors …): exactly (``==``);
- the packages .venv takes from Debian (rasterio and its helpers, pillow, sympy, jinja2 …): at
  least Debian's version (``>=``). Debian's are often older than any wheel for a newer QGIS's
  Python (pillow 9.4 has none for Python 3.12), so an exact pin would make pip build them;
- numpy never: QGIS's own numpy is kept (its GDAL is built against it; the installer pins it);
- dependencies of other platforms (colorama on Windows) are named in a comment: not installed
  here, so no tested version exists.

It also writes ``requirements.lock``, every package pip installed into .venv at its version,
which ``./dev.sh setup`` installs under: so the tests run with what the plugin installs, whatever
the registry has released since (a new filelock once put CI out of step). To move a version:
change requirements.txt, delete the lock's lines that stand in its way, run ``./dev.sh setup``,
then ``python tools/constraints.py``, which writes both files; ``--check`` exits 2 when either
is out of step (tests/test_installer.py runs the check).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPOSITORY = Path(__file__).resolve().parent.parent
TARGET = REPOSITORY / "sial_qgis_plugin" / "constraints.txt"
LOCK = REPOSITORY / "requirements.lock"
ROOTS = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "safetensors",
    "rasterio",
    "scipy",
    "scikit-image",
)
"""What the plugin installs (sial_qgis_plugin/environment.py, REQUIRED)."""
KEPT = {"numpy"}  # QGIS's own
HEADER = """\
# pip constraints for the packages the plugin installs into QGIS's Python: the versions its tests
# ran with. Written by tools/constraints.py from the project's .venv; do not edit by hand.
# ==: installed by pip in the tested environment. >=: taken from Debian there (older than the
# wheels a newer QGIS's Python needs). numpy is QGIS's own, and never installed over it.
"""
LOCK_HEADER = """\
# Every package pip installed into .venv, at the version the tests ran with: ./dev.sh setup
# installs under it (pip -c). Written by tools/constraints.py; do not edit by hand.
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=ROOTS) -> tuple[dict[str, metadata.Distribution], set[str]]:
    """The installed distributions ``roots`` need (here), and the names needed only elsewhere."""
    installed = {normalise(d.metadata["Name"]): d for d in metadata.distributions()}
    found: dict[str, metadata.Distribution] = {}
    elsewhere: set[str] = set()
    stack = [normalise(r) for r in roots]
    while stack:
        name = stack.pop()
        if name in found:
            continue
        if name not in installed:
            raise SystemExit(f"error: {name} is not installed in {sys.prefix}: run ./dev.sh setup first")
        found[name] = installed[name]
        for text in installed[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and "extra" in str(requirement.marker):
                continue  # an optional extra nobody asks for
            if requirement.marker is None or requirement.marker.evaluate():
                stack.append(normalise(requirement.name))
            elif normalise(requirement.name) not in installed:
                elsewhere.add(normalise(requirement.name))
    return found, elsewhere - set(found)


def from_pip(distribution: metadata.Distribution) -> bool:
    """Whether pip installed it into this virtual environment (not a system package)."""
    location = Path(str(distribution.locate_file(""))).resolve()
    return sys.prefix != sys.base_prefix and location.is_relative_to(Path(sys.prefix).resolve())


def constraints_text() -> str:
    found, elsewhere = closure()
    lines = [HEADER]
    for name in sorted(found):
        if name in KEPT:
            continue
        operator = "==" if from_pip(found[name]) else ">="
        lines.append(f"{name}{operator}{found[name].version}\n")
    if elsewhere:
        lines.append(f"# needed on other platforms only, no tested version: {', '.join(sorted(elsewhere))}\n")
    return "".join(lines)


def lock_text() -> str:
    """Every distribution pip installed into .venv, pinned: what ./dev.sh setup installs."""
    pinned = {
        normalise(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if from_pip(d) and normalise(d.metadata["Name"]) != "pip"  # the venv's own, from Debian
    }
    lines = [LOCK_HEADER] + [f"{name}=={version}\n" for name, version in sorted(pinned.items())]
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/constraints.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 2 if the file is out of step")
    args = parser.parse_args(argv)
    files = {TARGET: constraints_text(), LOCK: lock_text()}
    if args.check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text("utf-8") != text]
        if stale:
            names = " and ".join(str(path.relative_to(REPOSITORY)) for path in stale)
            print(f"error: {names} out of step with .venv: run tools/constraints.py", file=sys.stderr)
            return 2
        print(f"{' and '.join(str(p.relative_to(REPOSITORY)) for p in files)}: in step")
        return 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPOSITORY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
