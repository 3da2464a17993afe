"""The dense training's data: rasters held in memory, and random augmented crops with simulated
clicks (DIAL's click pre-training). No ImageNet weights are available here, so augmentation
(flips, rotations, scale and colour jitter) does what pre-training would."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F  # noqa: N812
from rasterio.errors import NotGeoreferencedWarning

from ..errors import UserError
from ..io.clicks import Click, encode_clicks
from ..predict.evaluation import LABEL_NODATA, read_labels
from .training_config import TrainingConfig


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
