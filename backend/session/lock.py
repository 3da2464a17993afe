"""One writer per session: an operating-system lock on a file beside the session's GeoPackage.

Two processes retraining one session at once would both number their round 2 and one would
overwrite the other's weights; a reader that tidied up while a writer was saving would delete
the checkpoint in progress. So every writer (the CLI's session commands, the QGIS plugin)
holds ``<session>.sial-lock`` while the session is open, and a second writer gets one clear
"busy" error naming the process that holds it. Readers (``session status``, ``export``) take
no lock and never remove files.

The lock is the kernel's (``flock`` on POSIX, ``msvcrt.locking`` on Windows): it goes away with
the process that holds it, so a crash never leaves a session locked. Within one process the lock
is shared (counted), so the plugin may reopen the session it already has.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import UserError

SUFFIX = ".sial-lock"
_PID_OFFSET = 1  # Windows locks byte 0; the holder's description is written after it


@dataclass
class _Held:
    handle: IO[bytes]
    count: int


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


@contextmanager
def released_on_failure(lock: SessionLock | None) -> Iterator[SessionLock | None]:
    """Acquire ``lock`` (None: a reader, no lock) for what follows; release it if that fails."""
    if lock is not None:
        lock.acquire()
    try:
        yield lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def lock_path(session: Path) -> Path:
    return session.with_suffix(SUFFIX)


class SessionLock:
    """Held from :meth:`acquire` to :meth:`release` (or the process's end)."""

    def __init__(self, session: Path):
        self.session = Path(session)
        self.path = lock_path(self.session).absolute()
        self.held = False

    def acquire(self) -> None:
        with _guard:
            held = _held.get(self.path)
            if held is not None:
                held.count += 1
                self.held = True
                return
            try:
                handle = open(self.path, "a+b")  # noqa: SIM115 (kept open while the lock is held)
            except OSError as exc:
                raise UserError(
                    f"cannot open session {self.session.name} for writing: {self.path} cannot be "
                    f"created ({exc.strerror or exc})"
                ) from None
            if not _try_lock(handle):
                holder = _describe_holder(handle)
                handle.close()
                raise UserError(
                    f"session {self.session.name} is busy: {holder} is writing to it; "
                    "wait until it has finished (or close the session there), then try again"
                )
            _write_holder(handle)
            _held[self.path] = _Held(handle, 1)
            self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with _guard:
            held = _held.get(self.path)
            if held is None:
                return
            held.count -= 1
            if held.count == 0:
                del _held[self.path]
                held.handle.close()  # closing releases the OS lock; the file stays (no race)


def _try_lock(handle: IO[bytes]) -> bool:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _write_holder(handle: IO[bytes]) -> None:
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    handle.seek(_PID_OFFSET)
    handle.truncate()
    handle.write(text.encode() + b"\n")
    handle.flush()


def _describe_holder(handle: IO[bytes]) -> str:
    try:
        handle.seek(_PID_OFFSET)
        holder = json.loads(handle.read().decode() or "{}")
        return f"process {int(holder['pid'])} on {holder.get('host') or 'this machine'}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
