"""The Dask side of a run: a local cluster sized to the machine, or an existing one, checked.

Before any task is scheduled, every worker is asked what it cannot see (inputs, model, output
folder), which engine it runs, its cores and whether it has the device asked for: a cluster whose
workers do not share the paths fails at once with one line, not with one error per block.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..errors import UserError
from ..progress import Monitor
from .worker import describe_worker, usable_cores

WORKER_MEMORY = 2 * 2**30
"""What one CPU worker may take (torch, a model, a block's strip): bounds a local cluster's size."""
WORKERS_WAIT = 30.0
"""How long an existing scheduler may take to get its first worker."""


@dataclass
class Cluster:
    client: Any
    description: str  # "local: 2 workers" or the scheduler's address
    local: bool
    dashboard: str | None = None
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # address → what it said
    threads_by_host: tuple[tuple[str, int], ...] = ()

    @property
    def slots(self) -> int:
        """Tasks that can run at once."""
        info = self.client.scheduler_info()["workers"]
        return max(1, sum(w.get("nthreads", 1) for w in info.values()))

    def check(self, paths: Sequence[str], probe: str, token: str, device: str) -> None:
        """Every worker sees ``paths`` and the output folder (``probe``), runs this engine, has
        ``device``."""
        try:
            answers = self.client.run(describe_worker, list(paths), probe, token, device)
        except ImportError as exc:
            raise UserError(
                f"the Dask workers cannot import the engine ({exc}): start them where it is "
                "importable, e.g. `PYTHONPATH=/path/to/repository dask worker …`"
            ) from None
        for address, answer in sorted(answers.items()):
            missing = answer["missing"]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise UserError(
                    f"Dask worker {address} cannot see {missing[0]}{more}: every worker needs the inputs, "
                    "the model and the output folder at the same paths as this machine (a shared file system)"
                )
            if answer["engine"] != __version__:
                raise UserError(
                    f"Dask worker {address} runs engine {answer['engine']}, this machine {__version__}"
                )
            if answer["device_error"]:
                raise UserError(f"Dask worker {address}: {answer['device_error']}")
        self.workers = answers
        self.threads_by_host = threads_by_host(self.client.scheduler_info()["workers"], answers)


def threads_by_host(
    scheduler_workers: dict[str, Any], answers: dict[str, Any]
) -> tuple[tuple[str, int], ...]:
    """torch threads per worker on each host: its cores shared among the task slots there."""
    cores: dict[str, int] = {}
    slots: dict[str, int] = {}
    for address, info in scheduler_workers.items():
        host = info.get("host", address)
        cores[host] = max(cores.get(host, 1), answers.get(address, {}).get("cores", 1))
        slots[host] = slots.get(host, 0) + info.get("nthreads", 1)
    return tuple(sorted((host, max(1, cores[host] // max(1, slots[host]))) for host in cores))


def local_size(device_type: str, workers: int | None) -> int:
    """Worker processes for a local cluster: one per GPU; on a CPU as many as the cores and the
    memory allow (one torch thread or more each)."""
    if workers:
        return workers
    if device_type == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    import psutil

    return max(1, min(usable_cores(), int(psutil.virtual_memory().available // WORKER_MEMORY)))


@contextmanager
def open_cluster(
    scheduler: str | None, workers: int | None, device_type: str, timeout: float, monitor: Monitor,
    python: str | None = None,
) -> Iterator[Cluster]:  # fmt: skip
    """A client on ``scheduler`` (``tcp://HOST:PORT``), or on a local cluster started here."""
    try:
        import distributed
    except ImportError:
        raise UserError("predict-many needs Dask: pip install 'dask[distributed]'") from None

    dashboard = importlib.util.find_spec("bokeh") is not None
    cluster = None
    if scheduler:
        client = _connect(distributed, scheduler, timeout)
        description = scheduler
    else:
        if python:  # inside QGIS sys.executable is QGIS itself: workers need a Python
            import multiprocessing

            multiprocessing.set_executable(python)
        count = local_size(device_type, workers)
        monitor.report(0.0, f"starting {count} Dask worker(s)")
        cluster = distributed.LocalCluster(
            n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0" if dashboard else None, silence_logs=logging.ERROR,
        )  # fmt: skip
        client = distributed.Client(cluster, set_as_default=False)
        description = f"local: {count} worker(s)"
    try:
        found = Cluster(client, description, cluster is not None)
        if dashboard and "dashboard" in client.scheduler_info().get("services", {}):
            found.dashboard = client.dashboard_link
            monitor.notice(f"Dask dashboard: {found.dashboard}")
        yield found
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _connect(distributed: Any, address: str, timeout: float) -> Any:
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach the Dask scheduler at {address} ({reason}): is `dask scheduler` running "
            "there, and is the address right?"
        ) from None
    try:
        client.wait_for_workers(1, timeout=max(timeout, WORKERS_WAIT))
    except (OSError, TimeoutError) as exc:
        client.close()
        raise UserError(
            f"the Dask scheduler at {address} has no worker ({type(exc).__name__}): start some with "
            f"`dask worker {address}`"
        ) from None
    return client
