"""Supervised training of a model bundle from image/label rasters, with DIAL's click pre-training.

Random crops with flips, rotations, scale and colour jitter (no ImageNet weights are available
here, so augmentation does what pre-training would). On a share of the crops, ground-truth points
sampled at random are encoded as click channels, the rest get none, so the network predicts well
both with and without clicks. Loss: cross-entropy + Dice, labels' 255 ignored. Checkpoints let an
interrupted run resume where it stopped; the best bundle on the validation rasters is kept.
Everything that defines a run is in its JSON config and recorded in the bundle's provenance.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..errors import UserError
from ..io.raster import RasterSource
from ..model.bundle import ModelBundle, load_bundle, save_bundle
from ..model.card import ModelCard
from ..model.network import autocast, bfloat16_if_supported, build_network
from ..predict.evaluation import LABEL_NODATA, Scores, predict_in_memory, read_labels, score
from ..predict.inference import Predictor
from ..progress import Monitor
from ..system.runtime import describe_device, resolve_device
from .crops import CropSampler, LabelledImage
from .training_config import TrainingConfig

CHECKPOINT = "checkpoint.pt"


def learning_rate_factor(step: int, config: TrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def autocast_dtype(config: TrainingConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "fp32":
        return None
    dtype = bfloat16_if_supported(device)
    if config.precision == "bf16" and dtype is None:
        raise UserError(f"precision bf16 was asked for but this {device.type} device has no bf16 support")
    return dtype


def validate(
    network: nn.Module, card: ModelCard, config: TrainingConfig, device: torch.device
) -> Scores | None:
    """Scores over every validation raster (whole rasters, tiled as in prediction, no clicks)."""
    if not config.validation:
        return None
    predictor = Predictor(ModelBundle(card, network), device)
    total: Scores | None = None
    for image, labels in config.validation:
        with RasterSource(image, card.input) as source:
            maps, _ = predict_in_memory(predictor, source)
        scores = score(maps.classes, read_labels(labels, config.class_map), [c.name for c in card.classes])
        total = scores if total is None else total + scores
    network.train()
    return total


@dataclass
class TrainingState:
    step: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def train(
    config: TrainingConfig,
    out_dir: Path,
    work_dir: Path,
    device_choice: str = "auto",
    monitor: Monitor | None = None,
    command: str | None = None,
) -> ModelBundle:
    """Train (or resume) and write the best bundle to ``out_dir``; checkpoints go to ``work_dir``."""
    monitor = monitor or Monitor()
    device = resolve_device(device_choice)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    card = config.card()
    torch.manual_seed(config.seed)
    network = build_network(card)
    if config.initialise_from is not None:
        initialise_from_bundle(network, card, Path(config.initialise_from))
    network = network.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    rng = np.random.default_rng(config.seed)
    state = TrainingState()
    checkpoint = work_dir / CHECKPOINT
    if checkpoint.is_file():
        state, rng = _resume(checkpoint, network, optimizer, scheduler, rng)
        monitor.report(state.step / config.steps, f"resumed at step {state.step}")
    images = [LabelledImage.load(i, lbl, config.bands, config.class_map) for i, lbl in config.train]
    sampler = CropSampler(images, config, rng)
    dice = _dice_loss()
    dtype = autocast_dtype(config, device)
    network.train()
    started, last_log = time.perf_counter() - state.seconds, time.perf_counter()
    losses: list[float] = []
    try:
        while state.step < config.steps:
            monitor.check()
            x, y = sampler.batch(card.n_classes)
            x, y = x.to(device), y.to(device)
            with autocast(device.type, dtype):
                logits = network(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, ignore_index=LABEL_NODATA) + config.dice_weight * dice(
                logits, y
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.step += 1
            losses.append(loss.item())
            if time.perf_counter() - last_log > 30 or state.step == config.steps:
                last_log = time.perf_counter()
                elapsed = last_log - started
                monitor.report(
                    state.step / config.steps,
                    f"step {state.step}/{config.steps} loss {np.mean(losses[-50:]):.3f} "
                    f"lr {scheduler.get_last_lr()[0]:.2e} {elapsed / max(state.step, 1):.2f} s/step",
                )
            if state.step % config.validate_every == 0 or state.step == config.steps:
                _validate_and_keep(network, card, config, device, state, out_dir, command, started, losses)
            if state.step % config.checkpoint_every == 0:
                state.seconds = time.perf_counter() - started
                _save_checkpoint(checkpoint, network, optimizer, scheduler, rng, state)
    except BaseException:
        state.seconds = time.perf_counter() - started
        _save_checkpoint(checkpoint, network, optimizer, scheduler, rng, state)
        raise
    state.seconds = time.perf_counter() - started
    _save_checkpoint(checkpoint, network, optimizer, scheduler, rng, state)
    if not config.validation:  # nothing to choose the best by: the last weights are the bundle
        _write_bundle(network, card, config, state, out_dir, command, None, device)
    from ..model.bundle import load_bundle

    return load_bundle(out_dir)


def _dice_loss() -> nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="multiclass", from_logits=True, ignore_index=LABEL_NODATA)


def _validate_and_keep(network, card, config, device, state, out_dir, command, started, losses) -> None:
    scores = validate(network, card, config, device)
    if scores is None:
        return
    entry = {
        "step": state.step,
        "miou": round(scores.miou, 2),
        "per_class_iou": scores.per_class(),
        "train_loss": round(float(np.mean(losses[-200:])), 4),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    state.history.append(entry)
    print(
        f"validation at step {state.step}: mIoU {scores.miou:.2f} {scores.per_class()}",
        file=sys.stderr,
        flush=True,
    )
    if scores.miou > state.best_miou:
        state.best_miou = scores.miou
        state.seconds = time.perf_counter() - started
        _write_bundle(network, card, config, state, out_dir, command, scores, device)


def initialise_from_bundle(network: torch.nn.Module, card: ModelCard, source_dir: Path) -> None:
    """Start from another bundle's weights, even with a different class list.

    Encoder and decoder copy over. For the rows that depend on the classes (the head's outputs
    and the encoder's click-channel inputs), a class whose name the source also has takes its
    row; any other class starts from the mean of the source classes left unmatched. Building
    against background from a land-cover model is the case this serves: 'building' copies, and
    'background' starts as the mean of land, road, vegetation and water.
    """
    source = load_bundle(source_dir)
    if source.card.architecture != card.architecture or source.card.encoder != card.encoder:
        raise UserError(
            f"initialise_from: {source_dir} is {source.card.architecture}-{source.card.encoder}, "
            f"not {card.architecture}-{card.encoder}"
        )
    if source.card.input.bands != card.input.bands:
        raise UserError(f"initialise_from: {source_dir} reads other bands than this model")
    names = [c.name for c in source.card.classes]
    wanted = [c.name for c in card.classes]
    unmatched = [i for i, name in enumerate(names) if name not in wanted] or list(range(len(names)))

    def rows(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        picked = [
            tensor.select(dim, names.index(name))
            if name in names
            else tensor.index_select(dim, torch.tensor(unmatched)).mean(dim)
            for name in wanted
        ]
        return torch.stack(picked, dim)

    state = {k: v.float() for k, v in source.network.state_dict().items()}
    bands, n_source = len(card.input.bands), source.card.n_classes
    first = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == source.card.in_channels)
    state[first] = torch.cat([state[first][:, :bands], rows(state[first][:, bands:], 1)], 1)
    for key in [k for k in state if k.startswith("segmentation_head.") and state[k].shape[0] == n_source]:
        state[key] = rows(state[key], 0)
    network.load_state_dict(state)


def _write_bundle(network, card, config, state, out_dir, command, scores, device) -> None:
    provenance: dict[str, Any] = {
        "training_data": config.training_data,
        "licence": config.licence,
        "train_rasters": [os.path.basename(i) for i, _ in config.train],
        "validation_rasters": [os.path.basename(i) for i, _ in config.validation],
        "class_map": config.class_map,
        "config": dataclasses.asdict(config),
        "command": command,
        "seed": config.seed,
        "steps": state.step,
        "training_minutes": round(state.seconds / 60, 1),
        "device": describe_device(device),
        "torch": torch.__version__,
        "history": state.history,
    }
    if scores is not None:
        provenance["validation"] = {
            "clicks": 0,
            "miou": round(scores.miou, 2),
            "per_class_iou": scores.per_class(),
            "pixel_accuracy": round(scores.accuracy, 2),
        }
    save_bundle(ModelBundle(card.with_updates(provenance=provenance), network), out_dir, dtype="float16")


def _save_checkpoint(
    path: Path, network, optimizer, scheduler, rng: np.random.Generator, state: TrainingState
) -> None:
    payload = {
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.random.get_rng_state(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "state": json.dumps(dataclasses.asdict(state)),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _resume(path: Path, network, optimizer, scheduler, rng: np.random.Generator):
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot resume from {path} ({exc}); delete it to start over") from None
    network.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.random.set_rng_state(payload["torch_rng"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    return TrainingState(**json.loads(payload["state"])), rng


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", "backend", *sys.argv[1:]])
