"""Build the installable plugin zip, then check it: dist/sial_qgis_plugin-<version>.zip.

QGIS installs a zip whose single top folder is the plugin package, with ``metadata.txt``::

    sial_qgis_plugin/          the plugin (its modules, icons, metadata.txt, LICENSE, README.md)
    sial_qgis_plugin/engine/   the engine: the contents of backend/, a subpackage of the plugin
    sial_qgis_plugin/models/   the bundled models

QGIS imports every plugin as a top-level package of one shared interpreter, so the engine must not
travel as a top-level ``backend``: any other plugin's ``backend`` would collide with it. The engine
imports itself relatively and runs under any package name; the plugin's own modules say
``from backend.x import y`` in the repository (tests run from its root, where ``backend`` is
importable) and are rewritten to ``from .engine.x import y`` (as many dots as the module is deep)
while the zip is written. Nothing of the zip goes on ``sys.path``
(see sial_qgis_plugin/environment.py).

A built zip is checked before it replaces the last one; ``--check ZIP`` checks a given zip. A
failed check is one ``error:`` line and exit status 2.

Beside the zip goes ``plugins.xml``, a QGIS plugin repository of one plugin: add its address in
*Plugins → Manage and Install Plugins → Settings → Add…* (``file:///…/dist/plugins.xml`` for the
folder itself, or the web address the folder is published at, given with ``--repository-url``),
and QGIS offers each newer version as an upgrade.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import datetime
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree

REPOSITORY = Path(__file__).resolve().parent.parent
PLUGIN = "sial_qgis_plugin"
ENGINE_SOURCE = "backend"
ENGINE = "engine"
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
SKIP_NAMES = {"ruff.toml"}  # the linter's settings point into the repository
FORBIDDEN_FOLDERS = {"backend", "experiments", "benchmarks", "tests"}
"""Folders of the repository that must never travel in the zip, at any depth."""
EXIT_FAILED = 2


class PackageError(Exception):
    """The zip cannot be built, or a built zip is not what QGIS should install."""


def version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(REPOSITORY / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def files_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not SKIP_PARTS & set(p.parts) and p.suffix not in SKIP_SUFFIXES
        and not p.name.startswith(".") and p.name not in SKIP_NAMES
    )  # fmt: skip


# ---------------------------------------------------------------------------- import rewriting


def _names_engine(module: str | None) -> bool:
    return module is not None and (module == ENGINE_SOURCE or module.startswith(ENGINE_SOURCE + "."))


def _engine_module(module: str) -> str:
    """``backend.io.clicks`` → ``engine.io.clicks``."""
    return ENGINE + module[len(ENGINE_SOURCE) :]


def _rewritten_import(node: ast.Import, dots: str, where: str) -> str:
    """An ``import backend…`` statement as the relative import that binds the same name."""
    if len(node.names) != 1:
        raise PackageError(f"{where}: import the engine on a line of its own")
    alias = node.names[0]
    if alias.name == ENGINE_SOURCE:
        return f"from {dots} import {ENGINE} as {alias.asname or ENGINE_SOURCE}"
    if alias.asname is None:
        raise PackageError(f"{where}: write `from {alias.name.rpartition('.')[0]} import …`, "
                           f"not `import {alias.name}` (it has no relative form)")  # fmt: skip
    package, _, last = alias.name.rpartition(".")
    return f"from {dots}{_engine_module(package)} import {last} as {alias.asname}"


def relative_engine_imports(source: str, depth: int, name: str = "<module>") -> str:
    """``source`` with every absolute import of the engine made relative to ``engine``.

    ``depth`` is how deep the module sits in the plugin package: 1 for ``controller.py``
    (``from .engine.x import y``), 2 for ``processing/algorithms.py`` (``from ..engine.x …``).
    Lazy imports inside functions are rewritten too; everything else is left byte for byte.
    """
    dots = "." * depth
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []  # (line, column, end line, end column, text)
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _names_engine(node.module):
            head = lines[node.lineno - 1].encode()[node.col_offset :].decode()
            match = re.match(rf"from\s+{ENGINE_SOURCE}\b", head)
            if match is None:
                raise PackageError(f"{where}: cannot read this import of the engine")
            end = node.col_offset + len(match.group().encode())
            edits.append((node.lineno, node.col_offset, node.lineno, end, f"from {dots}{ENGINE}"))
        elif isinstance(node, ast.Import) and any(_names_engine(a.name) for a in node.names):
            text = _rewritten_import(node, dots, where)
            edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text))
    for line, column, end_line, end_column, text in sorted(edits, reverse=True):
        first, last = lines[line - 1].encode(), lines[end_line - 1].encode()
        joined = first[:column] + text.encode() + last[end_column:]
        lines[line - 1 : end_line] = [joined.decode()]
    rewritten = "".join(lines)
    if left := absolute_engine_imports(rewritten, name):
        raise PackageError(f"{left[0]}: an absolute import of the engine is left after rewriting")
    return rewritten


def absolute_engine_imports(source: str, name: str = "<module>") -> list[str]:
    """``name:line`` of every absolute import of ``backend`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and _names_engine(node.module)) or (
            isinstance(node, ast.Import) and any(_names_engine(a.name) for a in node.names)
        ):
            found.append(f"{name}:{node.lineno}")
    return found


# ---------------------------------------------------------------------------- building


def _write(archive: zipfile.ZipFile, path: Path, arcname: str, data: bytes | None = None) -> None:
    info = zipfile.ZipInfo.from_file(path, arcname)
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, path.read_bytes() if data is None else data)


def build(out_dir: Path = REPOSITORY / "dist", check_zip: bool = True) -> Path:
    """Write the zip into ``out_dir`` and check it; a zip that fails its check is not kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN}-{version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    plugin = REPOSITORY / PLUGIN
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files_under(plugin):
                relative = path.relative_to(plugin)
                data = None
                if path.suffix == ".py":
                    source = path.read_text(encoding="utf-8")
                    data = relative_engine_imports(
                        source, len(relative.parts), f"{PLUGIN}/{relative}"
                    ).encode()
                _write(archive, path, f"{PLUGIN}/{relative.as_posix()}", data)
            for folder, inside in ((ENGINE_SOURCE, ENGINE), ("models", "models")):
                for path in files_under(REPOSITORY / folder):
                    _write(
                        archive, path, f"{PLUGIN}/{inside}/{path.relative_to(REPOSITORY / folder).as_posix()}"
                    )
            for name in ("metadata.txt", "LICENSE", "README.md"):
                _write(archive, REPOSITORY / name, f"{PLUGIN}/{name}")
        if check_zip:
            check(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target


# ---------------------------------------------------------------------------- checking

IMPORT_TEST = r"""
import ast, importlib, importlib.util, sys
from pathlib import Path

root = Path(sys.argv[1])
sys.path.insert(0, str(root))

def fail(text):
    print(text, file=sys.stderr)
    sys.exit(1)

for entry in sys.path:
    if entry and (Path(entry) / "backend" / "__init__.py").is_file():
        fail(f"the repository's engine is on sys.path: {entry}")
from sial_qgis_plugin import environment
before = list(sys.path)
environment.add_paths()  # what the plugin does first in QGIS: nothing generic may go on sys.path
added = [p for p in sys.path if p not in before]
if any(Path(p).parent.name != "sial_packages" for p in added):
    fail(f"add_paths() puts {added} on sys.path")
import sial_qgis_plugin.engine.cli.main
import sial_qgis_plugin.processing.algorithms
plugin = root / "sial_qgis_plugin"
for path in sorted(plugin.rglob("*.py")):
    relative = path.relative_to(root).with_suffix("")
    if relative.parts[1:2] == ("engine",):
        continue
    package = ".".join(relative.parts[:-1])  # a module's package; an __init__'s own
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        if not module.startswith("sial_qgis_plugin.engine"):
            continue
        try:
            imported = importlib.import_module(module)
            for alias in node.names:
                if not hasattr(imported, alias.name):
                    importlib.import_module(f"{module}.{alias.name}")
        except ImportError as exc:
            fail(f"{relative}.py:{node.lineno}: {exc}")
try:
    import backend
except ModuleNotFoundError:
    pass
else:
    fail(f"`import backend` works beside the zip: {backend.__file__}")
print("imports ok")
"""
"""Run with the extracted zip, and not the repository, on ``sys.path``: the engine's command line,
the Processing algorithms and every engine import of the plugin (lazy ones too) must work, a
top-level ``backend`` must not."""


def check_layout(archive: zipfile.ZipFile) -> None:
    """The zip's folders and modules, read without extracting anything."""
    names = archive.namelist()
    tops = sorted({name.split("/")[0] for name in names})
    if tops != [PLUGIN] or f"{PLUGIN}/metadata.txt" not in names:
        raise PackageError(f"the zip must hold one folder {PLUGIN}/ with metadata.txt, not {tops}")
    if f"{PLUGIN}/{ENGINE}/__init__.py" not in names:
        raise PackageError(f"the zip has no {PLUGIN}/{ENGINE}/__init__.py: the engine is missing")
    for name in names:
        if forbidden := FORBIDDEN_FOLDERS & set(name.split("/")[:-1]):
            raise PackageError(f"the zip holds a folder named {sorted(forbidden)[0]}/: {name}")
    for name in names:
        if name.endswith(".py"):
            source = archive.read(name).decode("utf-8")
            try:
                left = absolute_engine_imports(source, name)
            except SyntaxError as exc:
                raise PackageError(f"{name} does not parse: {exc}") from None
            if left:
                raise PackageError(f"{left[0]}: absolute import of {ENGINE_SOURCE} in the zip")


def check_imports(archive: zipfile.ZipFile, timeout: float = 300) -> None:
    """Extract the zip and import it in a fresh interpreter that cannot see the repository."""
    with tempfile.TemporaryDirectory(prefix="sial-zip-check-") as folder:
        archive.extractall(folder)
        result = subprocess.run(
            [sys.executable, "-I", "-c", IMPORT_TEST, folder],
            cwd=folder, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise PackageError(f"the extracted zip does not import cleanly: {lines[-1]}")


def check(zip_path: Path) -> None:
    """Raise :class:`PackageError` (one line) if ``zip_path`` is not a plugin zip QGIS should get."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            check_layout(archive)
            check_imports(archive)
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{zip_path} is not a zip: {exc}") from None


# ---------------------------------------------------------------------------- the repository

REPOSITORY_XML = "plugins.xml"
XML_FIELDS = (  # plugins.xml element ← metadata.txt key (QGIS's pyplugin_installer reads these)
    ("description", "description"), ("about", "about"), ("version", "version"),
    ("qgis_minimum_version", "qgisMinimumVersion"), ("qgis_maximum_version", "qgisMaximumVersion"),
    ("homepage", "homepage"), ("author_name", "author"), ("tracker", "tracker"),
    ("repository", "repository"), ("tags", "tags"), ("experimental", "experimental"),
    ("deprecated", "deprecated"), ("icon", "icon"), ("category", "category"),
)  # fmt: skip


def write_repository(zip_path: Path, base_url: str | None = None) -> Path:
    """``plugins.xml`` beside ``zip_path``: QGIS's plugin repository format, for this one plugin.

    ``base_url``: where the folder is published (default: the folder itself, as a file:// URL).
    QGIS names a repository's plugin after its ``file_name`` up to the first dot, so that field
    is ``sial_qgis_plugin.<version>.zip``, which makes it the installed plugin's folder name.
    """
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(REPOSITORY / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    url = (base_url or zip_path.parent.resolve().as_uri()).rstrip("/") + "/" + zip_path.name
    root = ElementTree.Element("plugins")
    plugin = ElementTree.SubElement(root, "pyqgis_plugin", name=general["name"], version=general["version"])
    for element, key in XML_FIELDS:
        ElementTree.SubElement(plugin, element).text = general.get(key, "")
    today = datetime.date.fromtimestamp(zip_path.stat().st_mtime).isoformat()
    extra = {
        "download_url": url,
        "file_name": f"{PLUGIN}.{general['version']}.zip",
        "uploaded_by": general.get("author", ""),
        "create_date": today,
        "update_date": today,
        "supports_qt6": general.get("supportsQt6", "False"),
    }
    for element, text in extra.items():
        ElementTree.SubElement(plugin, element).text = text
    ElementTree.indent(root)
    target = zip_path.parent / REPOSITORY_XML
    ElementTree.ElementTree(root).write(target, encoding="UTF-8", xml_declaration=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/package.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=REPOSITORY / "dist")
    parser.add_argument("--check", type=Path, metavar="ZIP", help="only check an existing zip")
    parser.add_argument(
        "--repository-url", metavar="URL", help="where dist/ is published, for plugins.xml (default: file://)"
    )
    args = parser.parse_args(argv)
    try:
        if args.check is not None:
            check(args.check)
            print(f"{args.check}: ok")
            return 0
        path = build(args.out_dir)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    repository = write_repository(path, args.repository_url)
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB, checked)")
    print(f"{repository} (add it in QGIS's plugin manager as a repository: Settings → Add…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
