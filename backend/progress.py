"""Progress reporting and cancellation shared by every long-running engine job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
"""Called with a fraction in [0, 1] and a short message."""

CancelCheck = Callable[[], bool]
"""Returns True when the user asked to stop."""


@dataclass
class Monitor:
    """Bundles the caller's progress callback and cancel check; both are optional."""

    progress: ProgressCallback | None = None
    cancelled: CancelCheck | None = None

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("cancelled by the user")

    def scaled(self, start: float, end: float) -> Monitor:
        """A monitor whose 0..1 maps onto ``start..end`` of this one, for sub-steps."""

        def progress(fraction: float, message: str) -> None:
            self.report(start + (end - start) * fraction, message)

        return Monitor(progress, self.cancelled)
