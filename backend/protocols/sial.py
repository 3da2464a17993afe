"""SIAL's protocol: a network trained from nothing but error-driven clicks, iteration after iteration.

The training rasters are cut into "images" (``image_size`` windows, like SIAL's datasets). In
each iteration:

1. the annotator looks at every image's prediction and, for each class, clicks once at the
   centre of that class's largest missed region (SIAL's annotator), or once in each of its few
   largest. In the first iteration there is no model yet: by default the annotator treats every
   pixel as missed, so the first clicks sit at the centres of each class's largest regions
   (``first_clicks="regions"``); ``"untrained"`` has it look at the untrained network's output
   instead, which ties the first clicks to the network's random initial weights;
2. the clicks may be spread over their superpixels (LSSQPS), sieved by the same prediction;
3. the network trains on all labels so far (EWDL or cross-entropy, from scratch at the start,
   then carrying on, or from scratch every iteration);
4. the validation rasters are predicted: mIoU, and the fraction of pixels clicked so far;
5. optionally (``adjust_prior`` in the training settings) the network is corrected for its labels'
   class shares (:mod:`backend.learn.prior_shift`) and scored with and without the correction.

The dense reference is the same network trained on every pixel of the same rasters (a bundle
such as models/dubai-landcover), measured the same way. That bundle had its own, larger training
budget; ``dense_labels`` gives the reference at this protocol's budget instead: no annotator, one
fit of the same trainer, with the same steps and crops, on every labelled pixel.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import MemoryRasterSource, RasterSource
from ..io.tiling import patch_grid
from ..learn.sparse_training import SparseSettings, SparseTrainer
from ..learn.superpixels import ExpansionSettings, SparseLabels, SuperpixelCache, expand_clicks, label_quality
from ..learn.training_config import TrainingConfig
from ..model.bundle import ModelBundle, create_bundle, load_bundle, save_bundle
from ..model.card import ClickEncoding
from ..predict.evaluation import LABEL_NODATA, Scores, predict_in_memory, read_labels, score
from ..predict.inference import Predictor
from ..progress import Monitor
from ..system.ownership import check_folder, claim
from ..system.runtime import resolve_device
from .agents import sial_clicks

FIRST_CLICKS = ("regions", "untrained")
"""What the first iteration's annotator sees: no prediction at all, or the untrained network's."""
SIAL_FILE = "sial.json"


@dataclass
class SialParameters:
    config: TrainingConfig
    out_dir: Path
    iterations: int = 6
    image_size: int = 512
    clicks_per_class: int = 1  # the annotator's clicks per class and image each iteration
    from_scratch: bool = False  # each iteration trains a fresh network on all labels, not the last one
    first_clicks: str = "regions"  # what the first annotator sees: "regions" (no prediction) or "untrained"
    training: SparseSettings = field(default_factory=SparseSettings)
    expansion: ExpansionSettings | None = None
    dense_labels: bool = False  # train on every labelled pixel instead of clicks: the equal-budget reference
    reference: Path | None = None  # a densely trained bundle of the same network
    device: str = "auto"
    seed: int = 0


def _validate(predictor: Predictor, pairs, class_map, names) -> Scores:
    total = None
    for image, labels in pairs:
        with RasterSource(image, predictor.card.input) as source:
            maps, _ = predict_in_memory(predictor, source)
        scores = score(maps.classes, read_labels(labels, class_map), names)
        total = scores if total is None else total + scores
    return total


DENSE_CENTRE_SPACING = 16
"""With ``dense_labels``, one crop centre is drawn per this many pixels squared, on average: crops
then cover the labelled pixels evenly, and each crop's other pixels come from the full labels."""


def dense_crop_centres(truth: np.ndarray, rng: np.random.Generator) -> SparseLabels:
    """Labelled pixels of ``truth``, drawn at random, for the trainer to centre crops on; the
    trainer reads every other label of a crop from ``truth`` itself (its dense targets), so
    the centres need not be every pixel (tens of millions, searched at every crop)."""
    labelled = np.flatnonzero(truth.ravel() != LABEL_NODATA)
    count = max(1, len(labelled) // DENSE_CENTRE_SPACING**2) if len(labelled) else 0
    chosen = np.sort(rng.choice(labelled, size=count, replace=False))
    rows, cols = np.divmod(chosen, truth.shape[1])
    return SparseLabels(rows, cols, truth.ravel()[chosen].astype(np.int64), np.ones(count, dtype=bool))


def _annotate(
    predicted: np.ndarray | None,
    truth: np.ndarray,
    clicks: list[Click],
    params: SialParameters,
    n_classes: int,
) -> int:
    """SIAL's annotator over every image of one raster (``predicted`` None: before any model):
    appends its new clicks, returns how many."""
    seen = {(c.row, c.col) for c in clicks}
    height, width = truth.shape
    before = len(clicks)
    for patch in patch_grid(width, height, params.image_size):
        window = np.s_[patch.row : patch.row + patch.height, patch.col : patch.col + patch.width]
        shown = None if predicted is None else predicted[window]
        for c in sial_clicks(shown, truth[window], range(n_classes), params.clicks_per_class):
            if (c.row + patch.row, c.col + patch.col) not in seen:
                clicks.append(Click(c.row + patch.row, c.col + patch.col, c.class_id))
                seen.add((clicks[-1].row, clicks[-1].col))
    return len(clicks) - before


def _write(
    params: SialParameters,
    config: TrainingConfig,
    history: list[dict[str, Any]],
    reference: Scores | None,
    complete: bool,
) -> dict[str, Any]:
    """OUT/sial.json, rewritten after every iteration: a long run that stops early keeps its figures."""
    result = {
        "protocol": "sial",
        "complete": complete,
        "iterations": history,
        "final_miou": history[-1]["validation_miou"],
        "reference_miou": round(reference.miou, 2) if reference else None,
        "reference_per_class_iou": reference.per_class() if reference else None,
        "share_of_dense": round(history[-1]["validation_miou"] / reference.miou, 4) if reference else None,
        "training": asdict(params.training),
        "expansion": asdict(params.expansion) if params.expansion else None,
        "image_size": params.image_size,
        "clicks_per_class": params.clicks_per_class,
        "from_scratch": params.from_scratch,
        "first_clicks": params.first_clicks,
        "dense_labels": params.dense_labels,
        "train_rasters": [Path(i).name for i, _ in config.train],
        "validation_rasters": [Path(i).name for i, _ in config.validation],
    }
    claim(params.out_dir, [SIAL_FILE])
    (params.out_dir / SIAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check(params: SialParameters) -> None:
    if params.first_clicks not in FIRST_CLICKS:
        choices = ", ".join(FIRST_CLICKS)
        raise UserError(f"the first clicks must be one of {choices}, not {params.first_clicks!r}")
    extras = params.expansion or params.training.adjust_prior
    if params.dense_labels and (params.iterations != 1 or extras):
        raise UserError(
            "dense labels are one fit on every labelled pixel: one iteration, without superpixel "
            "expansion or the prior correction"
        )
    check_folder(params.out_dir, [SIAL_FILE])  # before hours of training, not after


@dataclass
class _Data:
    """The training rasters (in memory: thousands of crops are read), their labels, and what the
    annotator has clicked and the superpixels it has computed so far."""

    sources: list[MemoryRasterSource]
    truths: list[np.ndarray]
    clicks: list[list[Click]]
    superpixels: list[SuperpixelCache]

    @property
    def labelled(self) -> int:
        return int(sum((t != LABEL_NODATA).sum() for t in self.truths))

    def true_shares(self, n_classes: int) -> np.ndarray:
        counts = [np.bincount(t[t != LABEL_NODATA], minlength=n_classes)[:n_classes] for t in self.truths]
        return np.sum(counts, axis=0) / self.labelled


def _labels(
    params: SialParameters,
    iteration: int,
    bundle: ModelBundle,
    device: Any,
    data: _Data,
    n_classes: int,
    step: Monitor,
) -> tuple[list[SparseLabels], list[dict[str, Any]]]:
    """This iteration's labels per raster (the annotator's clicks, spread over their superpixels
    when asked) and their quality against the truth."""
    if params.dense_labels:  # no annotator: crops centred anywhere labelled, every label read
        step.report(0.0, "every labelled pixel: drawing the training crops' centres")
        rng = np.random.default_rng(params.seed)
        return [dense_crop_centres(truth, rng) for truth in data.truths], []
    step.report(0.0, f"iteration {iteration + 1}: the annotator looks at the predictions")
    predictor = Predictor(bundle, device)
    sieving = params.expansion is not None and params.expansion.sieve is not None and iteration > 0
    predictor.keep_probabilities = sieving
    blank = iteration == 0 and params.first_clicks == "regions"
    labels, quality, new = [], [], 0
    for i, source in enumerate(data.sources):
        maps = None if blank else predict_in_memory(predictor, source)[0]
        shown = None if maps is None else maps.classes
        new += _annotate(shown, data.truths[i], data.clicks[i], params, n_classes)
        if params.expansion is None:
            labels.append(SparseLabels.from_clicks(data.clicks[i]))
        else:  # the sieve needs a model that has learnt something: never the first iteration
            p = maps.probabilities if sieving else None
            sieve = (lambda r, c, h, w, p=p: p[:, r : r + h, c : c + w]) if sieving else None
            labels.append(expand_clicks(source, data.clicks[i], params.expansion, sieve, data.superpixels[i]))
        quality.append(label_quality(labels[-1], data.truths[i]))
        step.report(0.3 * (i + 1) / len(data.sources), f"iteration {iteration + 1}: {new} new clicks")
    return labels, quality


def _prior_report(
    trainer: SparseTrainer, bundle: ModelBundle, validate: Any, true_shares: np.ndarray
) -> dict[str, Any]:
    """What the class-prior correction did: the validation scores without it too."""
    if trainer.prior is None:
        return {}
    trainer.prior.remove(bundle.network)
    before = validate(bundle)
    trainer.prior.apply(bundle.network)
    return {
        **trainer.prior.to_json(),
        "true_shares": [round(float(s), 5) for s in true_shares],
        "miou_before": round(before.miou, 2),
        "per_class_iou_before": before.per_class(),
    }


def _record(
    iteration: int,
    clicks: int,
    total: int,
    quality: list[dict[str, Any]],
    validation: Scores,
    losses,
    **extra,
) -> dict[str, Any]:
    added = sum(q["added_pixels"] for q in quality)
    wrong = sum(q["added_error_rate"] * q["added_pixels"] for q in quality)
    return {
        "iteration": iteration + 1,
        "clicks": clicks,
        "clicked_fraction_percent": round(100 * clicks / total, 5),
        "added_pixels": added,
        "added_fraction_percent": round(100 * added / total, 4),
        "added_error_rate": round(wrong / added, 4) if added else None,
        "validation_miou": round(validation.miou, 2),
        "per_class_iou": validation.per_class(),
        "loss": round(float(np.mean(losses[-50:])), 4),
        **{k: v for k, v in extra.items() if v},
    }


def run_sial(params: SialParameters, monitor: Monitor | None = None) -> dict[str, Any]:
    monitor = monitor or Monitor()
    _check(params)
    config, device = params.config, resolve_device(params.device)
    card = config.card().with_updates(name=f"{config.name}-sial", clicks=ClickEncoding(enabled=False))
    names = [c.name for c in card.classes]

    def fresh() -> tuple[ModelBundle, SparseTrainer]:
        bundle = create_bundle(card, seed=params.seed)
        return bundle, SparseTrainer(bundle.network, card, device, params.training)

    def validate(bundle: ModelBundle) -> Scores:
        return _validate(Predictor(bundle, device), config.validation, config.class_map, names)

    bundle, trainer = fresh()
    data = _Data(
        [MemoryRasterSource(image, card.input) for image, _ in config.train],
        [read_labels(labels, config.class_map) for _, labels in config.train],
        [[] for _ in config.train],
        [{} for _ in config.train],
    )
    total, true_shares = data.labelled, data.true_shares(card.n_classes)
    reference = None
    if params.reference is not None:
        dense = Predictor(load_bundle(params.reference), device, owns_network=True)
        reference = _validate(dense, config.validation, config.class_map, names)
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for iteration in range(params.iterations):
        step = monitor.scaled(iteration / params.iterations, (iteration + 1) / params.iterations)
        labels, quality = _labels(params, iteration, bundle, device, data, card.n_classes, step)
        if params.from_scratch and iteration:  # the labels so far, without the last network's history
            bundle, trainer = fresh()
        dense_targets = data.truths if params.dense_labels else None
        fit_data = list(zip(data.sources, labels, strict=True))
        losses = trainer.fit(fit_data, step.scaled(0.35, 0.9), dense_targets=dense_targets)
        validation = validate(bundle)
        clicks = total if params.dense_labels else sum(len(c) for c in data.clicks)
        prior = _prior_report(trainer, bundle, validate, true_shares)
        minutes = round((time.perf_counter() - started) / 60, 1)
        history.append(_record(iteration, clicks, total, quality, validation, losses, prior_shift=prior))
        history[-1]["minutes"] = minutes
        result = _write(params, config, history, reference, complete=iteration + 1 == params.iterations)
        step.report(1.0, f"iteration {iteration + 1}: validation mIoU {validation.miou:.2f}")
    for source in data.sources:
        source.close()
    save_bundle(
        ModelBundle(card.with_updates(provenance={"sial": result}), bundle.network), params.out_dir / "model"
    )
    return result
