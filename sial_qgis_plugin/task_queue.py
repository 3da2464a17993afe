"""One engine task at a time, and what waits for it (part of the session controller).

Predicting and retraining both change the session's maps and model, so they never overlap: a
task runs, and what it queued (the whole raster after the visible extent) or a map update that
clicks asked for meanwhile follows when it ends. A failed or cancelled task drops the queue and
says why in one message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsApplication

from .tasks import EngineTask


class TaskQueue:
    """Mixed into :class:`~.controller.SessionController`, which provides the signals
    ``busy_changed`` and ``progress``, ``_say`` and ``predict``."""

    task: EngineTask | None
    _after: list[Callable[[], None]]
    _update_pending: bool

    @property
    def busy(self) -> bool:
        return self.task is not None

    def cancel(self) -> None:
        """Cancel the running task (the task bar's and the dock's Cancel)."""
        if self.task is not None:
            self.task.cancel()

    def _run(self, description: str, work: Callable[[Any], Any], done: Callable[[Any], None]) -> None:
        """Run ``work(monitor)`` in the background; ``done(result)`` then runs on the GUI thread."""
        task = EngineTask(description, work, lambda result: self._done(done, result), self._failed)
        task.status.connect(lambda text: self.progress.emit(int(task.progress()), text))
        task.notice.connect(lambda text: self._say(text[0].upper() + text[1:] + ".", Qgis.Info))
        self.task = task
        self.busy_changed.emit(True, description)
        QgsApplication.taskManager().addTask(task)

    def _done(self, done: Callable[[Any], None], result: Any) -> None:
        self.task = None
        self.busy_changed.emit(False, "")
        try:
            done(result)
        finally:
            self._next()

    def _failed(self, error: str) -> None:
        self.task = None
        self.busy_changed.emit(False, "")
        self._after.clear()
        if error == "cancelled":
            self._say("Cancelled: the maps and the model are as they were before.", Qgis.Info)
        else:
            self._say(error, Qgis.Warning)
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        if self._after:
            self._after.pop(0)()
        elif self._update_pending:
            self._update_pending = False
            self.predict()
