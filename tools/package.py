"""Build the installable plugin zip: dist/sial_qgis_plugin-<version>.zip.

QGIS installs a zip whose single top folder is the plugin package with ``metadata.txt``
inside. The engine travels as ``engine/backend`` inside that folder, so that only ``engine`` goes
on ``sys.path`` (putting the plugin folder itself there would expose its ``processing``
subpackage as a top-level ``processing`` and break QGIS's own). The bundled models sit in
``models``. See sial_qgis_plugin/environment.py.
"""

from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PLUGIN = "sial_qgis_plugin"
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(REPOSITORY / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def files_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not SKIP_PARTS & set(p.parts) and p.suffix not in SKIP_SUFFIXES
        and not p.name.startswith(".")
    )  # fmt: skip


def build(out_dir: Path = REPOSITORY / "dist") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN}-{version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_under(REPOSITORY / PLUGIN):
            archive.write(path, f"{PLUGIN}/{path.relative_to(REPOSITORY / PLUGIN)}")
        for path in files_under(REPOSITORY / "backend"):
            archive.write(path, f"{PLUGIN}/engine/backend/{path.relative_to(REPOSITORY / 'backend')}")
        for path in files_under(REPOSITORY / "models"):
            archive.write(path, f"{PLUGIN}/models/{path.relative_to(REPOSITORY / 'models')}")
        for name in ("metadata.txt", "LICENSE", "README.md"):
            archive.write(REPOSITORY / name, f"{PLUGIN}/{name}")
    tmp.replace(target)
    return target


if __name__ == "__main__":
    path = build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPOSITORY / "dist")
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
