"""Engine work as QGIS background tasks: progress in QGIS's task bar, cancellable, and one clear
message (never a traceback) when something goes wrong. Results are applied on the GUI thread."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

LOG_TAG = "Interactive segmentation"


class EngineTask(QgsTask):
    """Runs ``work(monitor)`` in a worker thread; ``on_done(result)`` or ``on_error(message)``
    then run on the GUI thread (from :meth:`finished`)."""

    status = pyqtSignal(str)
    notice = pyqtSignal(str)  # a sentence for the user: a long run's size and estimated time …

    def __init__(
        self,
        description: str,
        work: Callable[[Any], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None],
    ):
        # Silent: QGIS would also say "Task complete" in its message bar; the plugin says what
        # happened itself, once (one message per event)
        super().__init__(description, QgsTask.Flag.CanCancel | QgsTask.Flag.Silent)
        self.work, self.on_done, self.on_error = work, on_done, on_error
        self.result: Any = None
        self.error: str | None = None

    def run(self) -> bool:
        from backend.errors import Cancelled, UserError
        from backend.progress import Monitor

        def progress(fraction: float, message: str) -> None:
            self.setProgress(100.0 * fraction)
            self.status.emit(message)

        try:
            self.result = self.work(Monitor(progress, self.isCanceled, self.notice.emit))
            return True
        except Cancelled:
            self.error = "cancelled"
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:
            self.error = f"internal error: {type(exc).__name__}: {exc} (details in the log)"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.MessageLevel.Critical)
        return False

    def finished(self, ok: bool) -> None:
        if ok:
            self.on_done(self.result)
        else:
            self.on_error(self.error or "cancelled")
