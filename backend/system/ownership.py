"""Which files in a folder the project wrote, so that it never replaces one it did not.

Output folders are often folders the user already had (``--out ~/maps``). Every writer that
publishes named files there records the names in a small hidden manifest; a later run may
replace those, and refuses to touch a file of the same name that the project did not write.
Removing things follows the same rule: only names the project owns, never a whole folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import UserError

MANIFEST = ".sial-written.json"
LEGACY_RUN_FILE = "run.json"  # earlier versions listed a prediction's files only there


def written_here(folder: Path) -> set[str]:
    """Names of the files in ``folder`` that the project wrote (an unreadable manifest: none)."""
    names: set[str] = set()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        names.update(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    try:
        run = json.loads((folder / LEGACY_RUN_FILE).read_text(encoding="utf-8"))
        if isinstance(run, dict) and "engine_version" in run:
            names.update([*run.get("files", []), LEGACY_RUN_FILE])
    except (OSError, ValueError, TypeError):
        pass
    return {n for n in names if isinstance(n, str)}


def check_replaceable(folder: Path, names: Iterable[str]) -> None:
    """Refuse (one :class:`UserError`) if a name exists in ``folder`` that the project did not write."""
    present = [n for n in sorted(set(names)) if os.path.lexists(folder / n)]
    if not present:
        return
    ours = written_here(folder)
    foreign = [n for n in present if n not in ours]
    if foreign:
        raise UserError(
            f"{folder} already holds {', '.join(foreign)}, which this program did not write: "
            "choose another (or an empty) output folder; nothing was changed"
        )


def check_folder(folder: Path, names: Iterable[str]) -> None:
    """Before a long job that will write ``names`` into ``folder``: refuse now what :func:`claim`
    would refuse at the end."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output path {folder} exists and is not a folder")
    if folder.is_dir():
        check_replaceable(folder, names)


def claim(folder: Path, names: Iterable[str]) -> None:
    """Before writing ``names`` into ``folder`` in place: refuse if one is someone else's, then
    create the folder and record the names as this program's."""
    names = list(names)
    folder = Path(folder)
    check_folder(folder, names)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        record_written(folder, names)
    except OSError as exc:
        raise UserError(f"cannot write in {folder}: {exc.strerror or exc}") from None


def record_written(folder: Path, names: Iterable[str]) -> None:
    """Add ``names`` to the folder's manifest (written atomically)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        known = [n for n in manifest.get("files", []) if isinstance(n, str)]
    except (OSError, ValueError, AttributeError):
        known = []
    merged = sorted({*known, *names})
    handle, name = tempfile.mkstemp(prefix=f"{MANIFEST}.", suffix=".tmp", dir=folder)  # a new file, ours
    tmp = Path(name)
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would hide the manifest from the folder's other users
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps({"files": merged}, indent=1) + "\n")
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written manifest behind
        raise


def remove_own_files(folder: Path, names: Iterable[str]) -> None:
    """Remove these files (the project's own, by name) and then ``folder`` if it is left empty."""
    for name in names:
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when nothing else is in it


def staging_folder(parent: Path, prefix: str) -> Path:
    """A new hidden folder ``<prefix><pid>-<random>`` in ``parent`` for files not yet published.

    Staging folders that a dead process left behind under the same prefix are removed first;
    nothing else in ``parent`` is looked at.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-[A-Za-z0-9_]+$")  # what mkdtemp makes of it
    for old in parent.glob(f"{prefix}*"):
        match = pattern.match(old.name)
        if match and old.is_dir() and not old.is_symlink() and not process_alive(int(match[1])):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: assume alive
    return True
