"""Progress reporting and cancellation shared by every long-running engine job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
"""Called with a fraction in [0, 1] and a short message."""

CancelCheck = Callable[[], bool]
"""Returns True when the user asked to stop."""

NoticeCallback = Callable[[str], None]
"""Called with one sentence the user should read before or during a long job (its size, its
estimated time); the CLI prints it as a ``note:`` line, the plugin shows it in the message bar."""


@dataclass
class Monitor:
    """Bundles the caller's progress callback, cancel check and notices; all are optional."""

    progress: ProgressCallback | None = None
    cancelled: CancelCheck | None = None
    notify: NoticeCallback | None = None

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def notice(self, text: str) -> None:
        if self.notify is not None:
            self.notify(text)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("cancelled by the user")

    def scaled(self, start: float, end: float) -> Monitor:
        """A monitor whose 0..1 maps onto ``start..end`` of this one, for sub-steps."""

        def progress(fraction: float, message: str) -> None:
            self.report(start + (end - start) * fraction, message)

        return Monitor(progress, self.cancelled, self.notify)
