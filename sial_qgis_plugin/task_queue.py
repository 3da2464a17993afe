"""One engine task at a time, and what waits for it (part of the session controller).

Loading the engine, starting or opening a session, predicting and retraining all change the
session, its maps or its model, so they never overlap: a task runs, and what it queued (the
whole raster after the visible extent, a session to open once the engine is loaded) or a map
update that clicks asked for meanwhile follows when it ends. A failed or cancelled task drops
the queue and says why in one message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsApplication

from .tasks import EngineTask

INFO, WARNING = Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning


class TaskQueue:
    """Mixed into :class:`~.controller.SessionController`, which provides the signals
    ``busy_changed`` and ``progress``, ``_say`` and ``predict``."""

    task: EngineTask | None
    _after: list[Callable[[], None]]
    _update_pending: bool

    @property
    def busy(self) -> bool:
        return self.task is not None

    @property
    def busy_with(self) -> str:
        """What the running task does ("" when none runs), as the dock's status line says it."""
        return self.task.description() if self.task is not None else ""

    def cancel(self) -> None:
        """Cancel the running task (the task bar's and the dock's Cancel)."""
        if self.task is not None:
            self.task.cancel()

    def _when_idle(self, call: Callable[[], Any]) -> None:
        """``call()`` now, or after the running task (dropped if that task fails)."""
        if self.busy:
            self._after.append(call)
        else:
            call()

    def _run(
        self,
        description: str,
        work: Callable[[Any], Any],
        done: Callable[[Any], None],
        failed: Callable[[str], str | None] | None = None,
    ) -> None:
        """Run ``work(monitor)`` in the background; ``done(result)`` or ``failed(error)`` then runs
        on the GUI thread (``failed`` may return the sentence to say instead of the error)."""
        task = EngineTask(
            description,
            work,
            lambda result: self._done(done, result),
            lambda error: self._failed(error, failed),
        )
        task.status.connect(lambda text: self.progress.emit(int(task.progress()), text))
        task.notice.connect(lambda text: self._say(text[0].upper() + text[1:] + ".", INFO))
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

    def _failed(self, error: str, failed: Callable[[str], str | None] | None = None) -> None:
        self.task = None
        self.busy_changed.emit(False, "")
        self._after.clear()
        said = failed(error) if failed is not None else None  # it may say it better
        if said:
            self._say(said, INFO if error == "cancelled" else WARNING)
        elif error == "cancelled":
            self._say("Cancelled: the maps and the model are as they were before.", INFO)
        else:
            self._say(error, WARNING)
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        if self._after:
            self._after.pop(0)()
        elif self._update_pending:
            self._update_pending = False
            self.predict()
