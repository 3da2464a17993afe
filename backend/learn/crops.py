"""The dense training's data: rasters held in memory, and random augmented crops with simulated
clicks (DIAL's click pre-training). No ImageNet weights are available here, so augmentation
(flips, rotations, scale, colour jitter and, for a model meant to travel, hue, saturation, blur and
noise) does what pre-training would."""

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
from scipy.ndimage import gaussian_filter

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


def hue_rotation(degrees: float) -> np.ndarray:
    """The 3 × 3 matrix that turns RGB about the grey axis by ``degrees``: every colour's hue moves,
    greys stay grey and brightness is kept (Rodrigues' rotation about (1, 1, 1) / √3)."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    third, root = (1 - cos) / 3, math.sqrt(1 / 3) * sin
    return np.array(
        [
            [cos + third, third - root, third + root],
            [third + root, cos + third, third - root],
            [third - root, third + root, cos + third],
        ],
        dtype=np.float32,
    )


def style_randomise(image: np.ndarray, config: TrainingConfig, rng: np.random.Generator) -> np.ndarray:
    """Another sensor's look on an image in [0, 1] (bands × h × w): hue turned by up to
    ``hue_degrees``, saturation scaled by up to ``saturation``, blurred (σ up to ``blur_sigma`` px,
    half the crops) and noisy (σ up to ``noise_std``). Each setting at 0 leaves its part out, so
    older configs train as they did. Hue and saturation need three bands."""
    if image.shape[0] == 3 and (config.hue_degrees > 0 or config.saturation > 0):
        if config.hue_degrees > 0:
            turn = hue_rotation(rng.uniform(-config.hue_degrees, config.hue_degrees))
            image = np.einsum("ij,jhw->ihw", turn, image)
        if config.saturation > 0:
            grey = image.mean(axis=0, keepdims=True)
            image = grey + (image - grey) * rng.uniform(1 - config.saturation, 1 + config.saturation)
    if config.blur_sigma > 0 and rng.random() < 0.5:
        image = gaussian_filter(image, sigma=(0, *(2 * [rng.uniform(0, config.blur_sigma)])))
    if config.noise_std > 0:
        image = image + rng.normal(0, rng.uniform(0, config.noise_std), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


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
        image = style_randomise(colour_jitter(image.numpy(), config.colour_jitter, rng), config, rng)
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
