"""AdaBN: the network's BatchNorm statistics re-estimated on the raster it is about to map.

A model trained on one city normalises every layer with that city's feature statistics; on
imagery from another sensor or continent those are off before any click (LoveDA's crops: the
bundled land-cover model calls most farmland water). Re-estimating the running means and
variances on the target raster, with every weight left as it is, removes that shift for the cost
of a few forward passes (Li et al., AdaBN, 2016). Crops are drawn at seeded positions, so the
result is deterministic; crops that are mostly nodata are skipped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io.raster import RasterSource
from ..model.card import ModelCard
from ..progress import Monitor

CROPS = 64
SIZE = 256
BATCH = 4
MIN_VALID = 0.5  # a crop with less valid area than this tells little about the raster


@dataclass(frozen=True)
class AdaptedStatistics:
    crops: int
    size: int
    seed: int
    seconds: float

    def as_json(self) -> dict[str, float | int]:
        return {"crops": self.crops, "size": self.size, "seed": self.seed, "seconds": round(self.seconds, 2)}


def adapt_batchnorm(
    network: nn.Module,
    card: ModelCard,
    source: RasterSource,
    crops: int = CROPS,
    size: int = SIZE,
    seed: int = 0,
    monitor: Monitor | None = None,
) -> AdaptedStatistics:
    """Replace ``network``'s BatchNorm running statistics by those of ``source`` (in place)."""
    monitor = monitor or Monitor()
    started = time.perf_counter()
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise UserError(f"model '{card.name}' has no BatchNorm layers to adapt")
    inputs = _crops(card, source, crops, size, seed)
    if not inputs:
        raise UserError(f"{source.info.path.name} has no {size}-px crop that is at least half valid")
    device = next(network.parameters()).device
    was_training, momenta = network.training, [norm.momentum for norm in norms]
    network.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch, whatever their number
        norm.train()
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), BATCH):
                monitor.check()
                batch = torch.from_numpy(np.stack(inputs[start : start + BATCH])).to(device)
                network(batch)
                monitor.report(min(1.0, (start + BATCH) / len(inputs)), "adapting to the raster's statistics")
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        network.train(was_training)
    return AdaptedStatistics(len(inputs), size, seed, time.perf_counter() - started)


def _crops(card: ModelCard, source: RasterSource, count: int, size: int, seed: int) -> list[np.ndarray]:
    """Up to ``count`` network inputs (no click channels set) at seeded positions."""
    info, rng = source.info, np.random.default_rng(seed)
    # The network takes sides that are multiples of 32: a raster smaller than a crop is padded.
    side = min(size, 32 * math.ceil(max(info.height, info.width) / 32))
    height = width = side
    inputs: list[np.ndarray] = []
    for _ in range(4 * count):
        if len(inputs) == count:
            break
        row = int(rng.integers(0, max(info.height - height, 0) + 1))
        col = int(rng.integers(0, max(info.width - width, 0) + 1))
        image, valid = source.read_normalized(row, col, height, width)
        if valid.mean() < MIN_VALID:
            continue
        if card.clicks.enabled:
            image = np.concatenate([image, np.zeros((card.n_classes, height, width), np.float32)])
        inputs.append(image)
    return inputs


def adapted_bundle(model_dir: Path, raster: Path, out: Path, pixel_size: float | None = None) -> Path:
    """A copy of the bundle at ``model_dir`` with its statistics adapted to ``raster``, written
    to ``out`` (a new folder); its card records what it was adapted to."""
    from ..model.bundle import load_bundle, save_bundle

    if out.exists():
        raise UserError(f"{out} already exists: choose another session name, or remove it")
    bundle = load_bundle(model_dir)
    with RasterSource(raster, bundle.card.input, pixel_size) as source:
        adapted = adapt_batchnorm(bundle.network, bundle.card, source)
    provenance = {
        **bundle.card.provenance,
        "adapted_statistics": {"raster": str(Path(raster).resolve()), "from": str(Path(model_dir).resolve())}
        | adapted.as_json(),
    }
    card = bundle.card.with_updates(provenance=provenance)
    save_bundle(replace(bundle, card=card), out)
    return out
