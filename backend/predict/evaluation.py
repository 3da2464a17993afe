"""Measuring a model against reference labels: in-memory prediction, confusion, IoU.

Used by training (validation), the simulated-annotator benchmark and the model-card figures.
mIoU is in percent over the model's classes, ignoring the labels' nodata (255).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ..errors import UserError
from ..io.clicks import Click
from ..io.outputs import CLASS_NODATA, MapBlock
from ..io.raster import RasterSource
from ..io.tiling import Patch, patch_grid
from ..progress import Monitor
from .inference import Predictor
from .patch_scores import PatchScores

LABEL_NODATA = 255


class ArrayMaps:
    """The class and uncertainty maps held in memory (a stand-in for the GeoTIFF writers)."""

    def __init__(self, height: int, width: int):
        self.classes = np.full((height, width), CLASS_NODATA, dtype=np.uint8)
        self.uncertainty = np.full((height, width), np.nan, dtype=np.float32)
        self.probabilities: np.ndarray | None = None  # filled when the predictor keeps them

    def write(self, block: MapBlock) -> None:
        h, w = block.classes.shape
        window = np.s_[block.row : block.row + h, block.col : block.col + w]
        self.classes[window] = block.classes
        self.uncertainty[window] = block.uncertainty
        if block.probabilities is not None:
            if self.probabilities is None:
                self.probabilities = np.zeros((block.probabilities.shape[0], *self.classes.shape), np.float32)
            self.probabilities[(slice(None), *window)] = block.probabilities

    def read(self, patch: Patch) -> MapBlock:
        window = np.s_[patch.row : patch.row + patch.height, patch.col : patch.col + patch.width]
        uncertainty = self.uncertainty[window].copy()
        return MapBlock(
            patch.row, patch.col, self.classes[window].copy(), uncertainty, ~np.isnan(uncertainty)
        )

    def close(self) -> None:
        pass


def read_labels(path: str | Path, class_map: dict[int, int] | None = None) -> np.ndarray:
    """Reference labels (uint8, 255 = ignore), optionally re-coded by ``class_map``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as dataset:
                labels = dataset.read(1)
                nodata = dataset.nodata
        except rasterio.errors.RasterioIOError as exc:
            raise UserError(f"cannot read labels {path}: {exc}") from None
    labels = labels.astype(np.uint8, copy=False)
    if nodata is not None and nodata != LABEL_NODATA:
        labels = np.where(labels == nodata, LABEL_NODATA, labels).astype(np.uint8)
    if class_map:
        lookup = np.full(256, LABEL_NODATA, dtype=np.uint8)
        for source, target in class_map.items():
            lookup[int(source)] = target
        labels = lookup[labels]
    return labels


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class; pixels whose truth or prediction is nodata
    are left out."""
    keep = (truth != LABEL_NODATA) & (predicted != CLASS_NODATA)
    index = truth[keep].astype(np.int64) * n_classes + predicted[keep].astype(np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass
class Scores:
    confusion: np.ndarray
    class_names: Sequence[str]
    iou: np.ndarray = field(init=False)  # percent per class (NaN: class absent from truth and prediction)

    def __post_init__(self) -> None:
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            self.iou = np.where(union > 0, 100.0 * tp / union, np.nan)

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou))

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(100.0 * np.trace(self.confusion) / total) if total else float("nan")

    def per_class(self) -> dict[str, float | None]:
        """IoU per class in percent; None for a class absent from both truth and prediction."""
        return {
            name: None if np.isnan(v) else round(float(v), 2)
            for name, v in zip(self.class_names, self.iou, strict=True)
        }

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.confusion + other.confusion, self.class_names)


def predict_in_memory(
    predictor: Predictor,
    source: RasterSource,
    clicks: Sequence[Click] = (),
    patch_size: int | None = None,
    monitor: Monitor | None = None,
) -> tuple[ArrayMaps, PatchScores]:
    """Whole-raster prediction into arrays (no files): for validation and benchmarks."""
    info = source.info
    size = patch_size or predictor.tile
    maps = ArrayMaps(info.height, info.width)
    scores = PatchScores(
        patch_grid(info.width, info.height, size), size, info.width, predictor.card.n_classes
    )
    predictor.predict_raster(source, clicks, maps, scores, None, monitor)  # type: ignore[arg-type]
    return maps, scores


def check_labels_grid(truth: np.ndarray, labels: str | Path, width: int, height: int) -> None:
    """Labels must lie on the raster's grid (benchmarks score pixel by pixel)."""
    if truth.shape != (height, width):
        raise UserError(
            f"labels {labels} are {truth.shape[1]} × {truth.shape[0]} px but the raster is "
            f"{width} × {height}: they must share the grid"
        )


def score(predicted: np.ndarray, truth: np.ndarray, class_names: Sequence[str]) -> Scores:
    if predicted.shape != truth.shape:
        raise UserError(
            f"labels are {truth.shape[1]} × {truth.shape[0]} px but the raster is "
            f"{predicted.shape[1]} × {predicted.shape[0]}: they must share the grid"
        )
    labelled = truth[truth != LABEL_NODATA]
    if labelled.size and int(labelled.max()) >= len(class_names):
        raise UserError(
            f"the labels hold class {int(labelled.max())} but the model has {len(class_names)} classes "
            f"(0–{len(class_names) - 1}): re-code them (--class-map) or choose labels for this model"
        )
    return Scores(confusion_matrix(predicted, truth, len(class_names)), class_names)
