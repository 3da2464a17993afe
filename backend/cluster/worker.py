"""The worker side: one model per worker process, loaded by its first task and kept.

Tasks carry only the model's folder and the settings (a few hundred bytes), never the network:
each worker process loads the bundle once, folds its BatchNorms as ``predict`` does, and keeps the
:class:`Predictor` for every later task. A worker that joins late, or one that replaces a lost
worker, loads it on its own first task.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError

_PREDICTORS: dict[tuple, Any] = {}
_LOCK = threading.Lock()
_PREPARED = False


@dataclass(frozen=True)
class TaskSettings:
    """What a worker needs to build its predictor; the same for every task of a run."""

    model_dir: str
    device: str
    precision: str
    acquisition: str
    mc_passes: int
    tile: int
    overlap: int
    batch_size: int | None
    patch_size: int
    torch_threads: int | None = None  # the user's choice, for every worker
    threads_by_host: tuple[tuple[str, int], ...] = ()  # else: the host's cores / its task slots

    @property
    def predictor_key(self) -> tuple:
        return (self.model_dir, self.device, self.precision, self.acquisition, self.mc_passes, self.tile,
                self.overlap, self.batch_size)  # fmt: skip


def predictor_for(settings: TaskSettings) -> tuple[Any, bool]:
    """This process's predictor for ``settings``, and whether this call loaded it."""
    with _LOCK:
        cached = _PREDICTORS.get(settings.predictor_key)
        if cached is not None:
            return cached, False
        from ..model.bundle import load_bundle
        from ..predict.inference import Predictor
        from ..predict.uncertainty import Acquisition

        _prepare_process(settings)
        bundle = load_bundle(settings.model_dir)
        acquisition = Acquisition(
            settings.acquisition, mc_passes=settings.mc_passes, mc_rate=bundle.card.mc_dropout_rate
        )
        predictor = Predictor(
            bundle, worker_device(settings.device), acquisition, settings.tile, settings.overlap,
            settings.batch_size, owns_network=True, precision=settings.precision,
        )  # fmt: skip
        _PREDICTORS.clear()  # one model per worker: a new run's model replaces the last one
        _PREDICTORS[settings.predictor_key] = predictor
        return predictor, True


def _prepare_process(settings: TaskSettings) -> None:
    """Once per worker process: torch's threads, GDAL's cache, the allocator, quiet warnings."""
    global _PREPARED
    import torch

    torch.set_num_threads(torch_threads(settings))
    if _PREPARED:
        return
    from osgeo import gdal

    from ..system.runtime import limit_gdal_cache, tune_allocator

    if not os.environ.get("SIAL_DEBUG"):
        warnings.simplefilter("ignore")
        gdal.PushErrorHandler("CPLQuietErrorHandler")
    limit_gdal_cache()
    tune_allocator()
    _PREPARED = True


def this_worker() -> Any | None:
    """The Dask worker running this code, or None outside one (a task called directly)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_host() -> str:
    worker = this_worker()
    if worker is None:
        return "local"
    from distributed.comm import get_address_host

    return get_address_host(worker.address)


def torch_threads(settings: TaskSettings) -> int:
    if settings.torch_threads:
        return settings.torch_threads
    by_host = dict(settings.threads_by_host)
    if worker_host() in by_host:
        return by_host[worker_host()]
    worker = this_worker()
    slots = worker.state.nthreads if worker is not None else 1
    return max(1, usable_cores() // max(1, slots))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_device(choice: str) -> Any:
    """The device for this worker: with several GPUs and ``auto``/``cuda``, one per worker in turn."""
    import torch

    from ..system.runtime import resolve_device

    device = resolve_device(choice)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is None and count > 1:
        worker = this_worker()
        name = getattr(worker, "name", 0)
        index = int(name) if str(name).isdigit() else sum(map(ord, str(name)))
        device = torch.device("cuda", index % count)
    return device


def describe_worker(paths: list[str], probe: str, token: str, device: str) -> dict[str, Any]:
    """Run on every worker before any task: what it cannot see, its engine, cores and device.

    ``probe`` is a file the coordinator just wrote in the output folder, holding ``token``: a
    worker that reads it there writes into the same folder, not into a namesake on its own disk.
    """
    from ..system.runtime import resolve_device

    missing = [p for p in paths if not os.path.exists(p)]
    try:
        same_folder = Path(probe).read_text(encoding="utf-8") == token and os.access(
            Path(probe).parent, os.W_OK
        )
    except OSError:
        same_folder = False
    if not same_folder:
        missing.append(f"the output folder {Path(probe).parent} as this machine sees it (writable, shared)")
    try:
        resolve_device(device)
        device_error = None
    except UserError as exc:
        device_error = str(exc)
    return {
        "missing": missing,
        "engine": __version__,
        "cores": usable_cores(),
        "device_error": device_error,
        "pid": os.getpid(),
    }
