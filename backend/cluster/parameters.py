"""What a ``predict-many`` run is asked (:class:`ManyParameters`), what it planned
(:class:`ManyJob`) and what it returns (:class:`ManyReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.card import ModelCard
from .connection import Cluster
from .planning import DEFAULT_BLOCK, BlockTask, InputPlan, Layout
from .worker import TaskSettings


@dataclass
class ManyParameters:
    inputs: list[str | Path]  # rasters, folders, glob patterns, VRT mosaics
    out_dir: Path
    model_dir: Path | None = None
    acquisition: str = "entropy"
    mc_passes: int = 5
    device: str = "auto"
    precision: str = "auto"  # see backend/model/network.py inference_dtype
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    block: int = DEFAULT_BLOCK
    scheduler: str | None = None  # tcp://HOST:PORT of a running cluster; None: a local one
    workers: int | None = None  # local cluster's worker processes (default: sized to the machine)
    torch_threads: int | None = None  # per worker (default: the host's cores / its task slots)
    connect_timeout: float = 5.0
    python: str | None = None  # the Python a local cluster's workers run (inside QGIS)


@dataclass
class ManyReport:
    out_dir: Path
    run: dict[str, Any]
    notices: list[str] = field(default_factory=list)

    @property
    def run_file(self) -> Path:
        return self.out_dir / "run.json"


@dataclass
class ManyJob:
    """A planned run: the model, the inputs' blocks, and those finished by an earlier run."""

    params: ManyParameters
    out: Path
    model_dir: Path
    card: ModelCard
    layout: Layout
    plans: list[InputPlan]
    reused: dict[tuple[str, str], dict[str, Any]]  # (input, block) → its run.json
    device_type: str
    notices: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[BlockTask]:
        return [t for p in self.plans for t in p.blocks if (t.name, t.label) not in self.reused]

    def settings(self, cluster: Cluster) -> TaskSettings:
        p, layout = self.params, self.layout
        return TaskSettings(
            str(self.model_dir), p.device, p.precision, p.acquisition, p.mc_passes, layout.tile,
            layout.overlap, p.batch_size, layout.patch_size, p.torch_threads, cluster.threads_by_host,
        )  # fmt: skip
