"""The engine loaded in the background (part of the session controller).

Importing torch and the engine takes QGIS 3–5 s on a laptop; done on the GUI thread it freezes
the desktop. So nothing of the plugin imports torch when QGIS starts: the first time the dock is
opened (or a saved session is reopened with its project) a background task imports it, finds the
GPU, and only then do the dock's *Predict* and its settings come alive. A session asked for
meanwhile starts once the engine is there. Scripts and tests that drive the controller directly
get the same: their first ``start`` or ``open_session`` waits for the loading task.

rasterio's ``NotGeoreferencedWarning`` is silenced here too: a raster without a CRS is normal
(the dock says so once), and QGIS would log every such warning with a traceback.
"""

from __future__ import annotations

from typing import Any


def quiet_rasterio() -> None:
    """Ignore rasterio's NotGeoreferencedWarning for good (QGIS logs warnings with tracebacks)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


def import_engine() -> str:
    """Import torch and the engine (in a worker thread); returns the GPU's description."""
    quiet_rasterio()
    from skimage import segmentation  # noqa: F401 - a round's superpixels: 0.6 s off the first Retrain

    from backend.io import export  # noqa: F401 - what the dock's jobs use, imported here once
    from backend.learn import new_model  # noqa: F401
    from backend.predict import evaluation, job  # noqa: F401
    from backend.session import files, session  # noqa: F401

    from .environment import gpu_description

    return gpu_description()


class EngineLoader:
    """Mixed into :class:`~.controller.SessionController`, which provides ``engine_ready``
    (a signal), ``_run`` and ``_when_idle``."""

    engine_loaded: bool
    _loading_engine: bool
    gpu: str

    def load_engine(self) -> None:
        """Start loading the engine in the background, once."""
        if self.engine_loaded or self._loading_engine:
            return
        self._loading_engine = True

        def done(gpu: str) -> None:
            self._loading_engine, self.engine_loaded, self.gpu = False, True, gpu
            self.engine_ready.emit(True)

        def failed(error: str) -> str:
            self._loading_engine = False
            self.engine_ready.emit(False)
            return f"The engine could not be loaded: {error}"

        self._run("Loading PyTorch and the engine", lambda monitor: import_engine(), done, failed)

    def _with_engine(self, call: Any) -> None:
        """``call()`` once the engine is loaded (now, or after the loading task)."""
        if not self.engine_loaded:
            self.load_engine()
        self._when_idle(call)

    def _engine_busy_reason(self) -> str | None:
        """Why a new job cannot start now, or None."""
        if self.busy and not self._loading_engine:
            return "Wait for the running task to finish, or cancel it."
        return None
