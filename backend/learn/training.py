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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F  # noqa: N812
from rasterio.errors import NotGeoreferencedWarning
from torch import nn

from ..errors import UserError
from ..io.clicks import Click, encode_clicks
from ..io.raster import RasterSource
from ..model.bundle import CARD_FILE, ModelBundle, load_bundle, save_bundle
from ..model.card import ClassInfo, ClickEncoding, InputSpec, ModelCard, Normalization, Tiling
from ..model.network import bfloat16_if_supported, build_network
from ..predict.evaluation import LABEL_NODATA, Scores, predict_in_memory, read_labels, score
from ..predict.inference import Predictor
from ..progress import Monitor
from ..system.runtime import describe_device, resolve_device

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainingConfig:
    name: str
    classes: list[tuple[str, str]]  # (name, #rrggbb), in index order
    train: list[tuple[str, str]]  # (image, labels) raster pairs
    validation: list[tuple[str, str]] = field(default_factory=list)
    class_map: dict[int, int] | None = None  # label value → class index (others ignored)
    description: str = ""
    training_data: str = ""
    licence: str = ""
    gsd_m: float | None = None
    architecture: str = "Linknet"
    encoder: str = "resnet34"
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    crop: int = 256
    batch_size: int = 8
    steps: int = 12000
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    click_probability: float = 0.5  # share of crops that get simulated clicks (DIAL)
    max_clicks: int = 20
    click_radius: int = 10
    scale_range: tuple[float, float] = (0.75, 1.33)
    colour_jitter: float = 0.15
    dice_weight: float = 1.0
    validate_every: int = 1000
    checkpoint_every: int = 250
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    initialise_from: str | None = None  # a bundle whose weights start this run (transfer learning)

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"training config not found: {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        try:
            config = cls(**data)
        except TypeError as exc:
            raise UserError(f"{path}: {exc}") from None
        config.classes = [tuple(c) for c in config.classes]  # type: ignore[misc]
        config.train = [tuple(p) for p in config.train]  # type: ignore[misc]
        config.validation = [tuple(p) for p in config.validation]  # type: ignore[misc]
        config.scale_range = tuple(config.scale_range)  # type: ignore[assignment]
        if config.class_map is not None:
            config.class_map = {int(k): int(v) for k, v in config.class_map.items()}
        config.check()
        return config

    def check(self) -> None:
        if len(self.classes) < 2:
            raise UserError("a model needs at least two classes")
        if not self.train:
            raise UserError("no training rasters ('train' is empty)")
        for image, labels in [*self.train, *self.validation]:
            for path in (image, labels):
                if not Path(path).is_file():
                    raise UserError(f"training data not found: {path}")
        if self.crop % 32 or self.crop < 64:
            raise UserError(f"crop must be a multiple of 32, at least 64 (not {self.crop})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError("precision must be auto, bf16 or fp32")
        if self.initialise_from is not None and not (Path(self.initialise_from) / CARD_FILE).is_file():
            raise UserError(f"initialise_from: no model bundle at {self.initialise_from}")

    def card(self) -> ModelCard:
        n = len(self.bands)
        return ModelCard(
            name=self.name,
            description=self.description,
            classes=tuple(ClassInfo(i, name, colour) for i, (name, colour) in enumerate(self.classes)),
            architecture=self.architecture,
            encoder=self.encoder,
            input=InputSpec(
                bands=tuple(self.bands),
                band_names=tuple(("red", "green", "blue")[:n])
                if n <= 3
                else tuple(f"band {b}" for b in self.bands),
                dtype="uint8",
                gsd_m=self.gsd_m,
                normalization=Normalization(
                    method="fixed",
                    min=(0.0,) * n,
                    max=(255.0,) * n,
                    mean=tuple(self.mean),
                    std=tuple(self.std),
                ),
            ),
            clicks=ClickEncoding(enabled=True, radius=self.click_radius),
            tiling=Tiling(512, 128),
        )


@dataclass
class LabelledImage:
    """A training raster held in memory: bands × H × W uint8 and labels H × W (255 = ignore)."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    @classmethod
    def load(
        cls, image: str, labels: str, bands: Sequence[int], class_map: dict[int, int] | None
    ) -> LabelledImage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(image) as dataset:
                if dataset.dtypes[0] != "uint8":
                    raise UserError(f"{image}: training expects uint8 imagery, not {dataset.dtypes[0]}")
                pixels = dataset.read(list(bands))
                valid = np.all(dataset.read_masks(list(bands)) > 0, axis=0)
        truth = read_labels(labels, class_map)
        if truth.shape != valid.shape:
            raise UserError(f"{labels} and {image} are not on the same grid")
        truth[~valid] = LABEL_NODATA
        return cls(pixels, truth, Path(image).name)


def colour_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, per-band gain and gamma on an image in [0, 1] (bands × h × w): other
    sensors, seasons, exposures. ``strength`` 0 returns the image unchanged."""
    j = strength  # short, for the formulas below
    if j <= 0:
        return image
    image = image * rng.uniform(1 - j, 1 + j) * rng.uniform(1 - j / 3, 1 + j / 3, (image.shape[0], 1, 1))
    mean = image.mean()
    image = (image - mean) * rng.uniform(1 - j, 1 + j) + mean
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(1 - j, 1 + j)
    return image.astype(np.float32)


class CropSampler:
    """Random augmented crops (image normalised, labels) and simulated clicks."""

    def __init__(self, images: Sequence[LabelledImage], config: TrainingConfig, rng: np.random.Generator):
        self.images, self.config, self.rng = images, config, rng
        weights = np.array([(i.labels != LABEL_NODATA).sum() for i in images], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.mean = np.asarray(config.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(config.std, dtype=np.float32)[:, None, None]

    def crop(self) -> tuple[np.ndarray, np.ndarray]:
        config, rng = self.config, self.rng
        for _ in range(20):
            source = self.images[rng.choice(len(self.images), p=self.weights)]
            height, width = source.labels.shape
            scale = math.exp(rng.uniform(math.log(config.scale_range[0]), math.log(config.scale_range[1])))
            side = min(round(config.crop * scale), height, width)
            row, col = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            labels = source.labels[row : row + side, col : col + side]
            if (labels != LABEL_NODATA).mean() >= 0.5:
                break
        image = torch.from_numpy(
            source.image[:, row : row + side, col : col + side].astype(np.float32) / 255.0
        )
        target = torch.from_numpy(labels.astype(np.int64))
        if side != config.crop:
            image = F.interpolate(
                image[None],
                size=(config.crop, config.crop),
                mode="bilinear",
                align_corners=False,
                antialias=side > config.crop,
            )[0]
            target = F.interpolate(
                target[None, None].float(), size=(config.crop, config.crop), mode="nearest"
            )[0, 0].long()
        turns = int(rng.integers(0, 4))
        image, target = torch.rot90(image, turns, (1, 2)), torch.rot90(target, turns, (0, 1))
        if rng.random() < 0.5:
            image, target = image.flip(2), target.flip(1)
        image = colour_jitter(image.numpy(), config.colour_jitter, rng)
        return (image - self.mean) / self.std, target.numpy().astype(np.uint8)

    def clicks(self, labels: np.ndarray) -> list[Click]:
        """Ground-truth points at random (DIAL's click pre-training), on a share of the crops."""
        config, rng = self.config, self.rng
        if rng.random() >= config.click_probability:
            return []
        rows, cols = np.nonzero(labels != LABEL_NODATA)
        if rows.size == 0:
            return []
        picks = rng.choice(
            rows.size, size=min(int(rng.integers(1, config.max_clicks + 1)), rows.size), replace=False
        )
        return [Click(int(rows[i]), int(cols[i]), int(labels[rows[i], cols[i]])) for i in picks]

    def batch(self, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = [], []
        size = self.config.crop
        for _ in range(self.config.batch_size):
            image, labels = self.crop()
            channels = encode_clicks(
                self.clicks(labels), 0, 0, size, size, n_classes, self.config.click_radius
            )
            inputs.append(np.concatenate([image, channels]))
            targets.append(labels)
        x = torch.from_numpy(np.stack(inputs)).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(np.stack(targets).astype(np.int64))


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
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
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
