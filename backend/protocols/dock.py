"""The dock's own pattern with a simulated annotator: a few clicks, then one round.

An analyst in the dock does not retrain after every click (DIAL's protocol): they click a handful
of errors, each fixed at once around itself (AC), then press *Retrain* once. This protocol measures
exactly that, for one or more rounds:

1. Predict the raster with the clicks so far (none at first).
2. The annotator clicks, on that map, either the centres of the ``clicks`` largest errors of any
   class (``largest``) or of each class's ``per_class`` largest missed regions (``per-class``).
3. The map with those clicks as input channels (AC, what the analyst sees before *Retrain*), then
   one DISCA round on every click so far and the map it gives, which the round guard
   (:mod:`..learn.round_check`) keeps or rolls back.

Reported per round: mIoU before the clicks, with them (AC), after the round, what the guard decided
and why, so a round that makes the map worse is visible whether or not it was caught.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import RasterSource
from ..learn.adabn import adapt_batchnorm
from ..learn.disca import Disca, DiscaSettings, anchor_from
from ..learn.round_check import RoundCheck, judge_round
from ..model.bundle import ModelBundle, load_bundle
from ..predict.evaluation import Scores, check_labels_grid, predict_in_memory, read_labels, score
from ..predict.held_classes import classes_to_hold
from ..predict.inference import Predictor
from ..progress import Monitor
from ..system.ownership import check_folder, claim
from ..system.runtime import describe_device
from .agents import errors, region_centres, sial_clicks

PATTERNS = ("largest", "per-class")
DOCK_FILE = "dock.json"


@dataclass
class DockParameters:
    raster: Path
    labels: Path
    out_dir: Path
    clicks: int = 10  # per round, for ``largest``
    pattern: str = "largest"
    per_class: int = 1  # per class and round, for ``per-class``
    rounds: int = 1
    model_dir: Path | None = None
    bundle: ModelBundle | None = None
    device: str = "auto"
    class_map: dict[int, int] | None = None
    guard: bool = True
    pixel_size: float | None = None
    adapt_statistics: bool = False  # AdaBN on the raster before anything (learn/adabn.py)
    disca: DiscaSettings = field(default_factory=DiscaSettings)

    def check(self) -> None:
        if self.pattern not in PATTERNS:
            raise UserError(f"pattern must be one of {', '.join(PATTERNS)}, not {self.pattern}")
        if self.clicks < 1 or self.per_class < 1 or self.rounds < 1:
            raise UserError("the dock pattern needs at least one click and one round")


def annotate(
    predicted: np.ndarray, truth: np.ndarray, params: DockParameters, classes: list[int], taken: set
) -> list[Click]:
    """One round's clicks on ``predicted``, never twice on one pixel."""
    if params.pattern == "per-class":
        chosen = sial_clicks(predicted, truth, classes, params.per_class)
    else:
        chosen = [
            Click(r, c, int(truth[r, c])) for r, c in region_centres(errors(predicted, truth), params.clicks)
        ]
    return [c for c in chosen if (c.row, c.col) not in taken]


def run_dock(params: DockParameters, monitor: Monitor | None = None) -> dict[str, Any]:
    params.check()
    check_folder(params.out_dir, (DOCK_FILE,))
    monitor = monitor or Monitor()
    started = time.perf_counter()
    bundle = params.bundle or (load_bundle(params.model_dir) if params.model_dir else None)
    if bundle is None:
        raise UserError("no model given (--model DIR)")
    bundle = replace(bundle, network=copy.deepcopy(bundle.network))
    card = bundle.card
    truth = read_labels(params.labels, params.class_map)
    with RasterSource(params.raster, card.input, params.pixel_size) as source:
        check_labels_grid(truth, params.labels, source.grid.raster.width, source.grid.raster.height)
        if params.adapt_statistics:
            adapt_batchnorm(bundle.network, card, source)
        run = _DockRun(params, bundle, source, truth)
        initial = run.score(run.current)
        rounds = []
        for number in range(1, params.rounds + 1):
            monitor.check()
            outcome = run.round(number)
            if outcome is None:
                break
            rounds.append(outcome)
            monitor.report(number / params.rounds, f"round {number}: mIoU {outcome['miou_kept']:.2f}")
        device = describe_device(run.predictor.device)
    result = {
        "protocol": "dock",
        "raster": str(Path(params.raster).resolve()),
        "labels": str(Path(params.labels).resolve()),
        "model": {"name": card.name, "sha256": card.weights_sha256},
        "pattern": params.pattern,
        "clicks_per_round": params.clicks if params.pattern == "largest" else params.per_class,
        "guard": params.guard,
        "adapt_statistics": params.adapt_statistics,
        "initial_miou": round(initial.miou, 3),
        "initial_per_class_iou": initial.per_class(),
        "final_miou": rounds[-1]["miou_kept"] if rounds else round(initial.miou, 3),
        "rounds": rounds,
        "disca": asdict(params.disca),
        "device": device,
        "total_seconds": round(time.perf_counter() - started, 1),
        "engine_version": __version__,
    }
    claim(params.out_dir, (DOCK_FILE,))
    (params.out_dir / DOCK_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


class _DockRun:
    """The model, the raster, the truth and the clicks so far; one round at a time. Clicks and
    scores are on the raster's grid, whatever grid the network reads it on."""

    def __init__(self, params: DockParameters, bundle: ModelBundle, source: RasterSource, truth: np.ndarray):
        self.params, self.bundle, self.source, self.truth = params, bundle, source, truth
        self.names = [c.name for c in bundle.card.classes]
        self.predictor = Predictor(bundle, params.device, owns_network=False)
        # The guard's decision is taken here, from the round's own check, so that the map the
        # round would have given is measured too.
        settings = replace(params.disca, guard=False)
        anchor = anchor_from(copy.deepcopy(bundle.network))
        self.disca = Disca(bundle.network, bundle.card, anchor, self.predictor.device, settings)
        self.clicks: list[Click] = []
        self.current = self.predict()

    def predict(self) -> np.ndarray:
        """The class map with every click so far as input channels, on the raster's grid (its
        uncertainty in ``self.uncertainty``)."""
        grid = self.source.grid
        maps = predict_in_memory(self.predictor, self.source, grid.clicks_to_model(self.clicks))[0]
        self.uncertainty = grid.to_raster_array(maps.uncertainty)
        return grid.to_raster_array(maps.classes)

    def score(self, classes: np.ndarray) -> Scores:
        return score(classes, self.truth, self.names)

    def round(self, number: int) -> dict[str, Any] | None:
        """The annotator's clicks on the current map, then one round; None when nothing is left."""
        classes = list(range(self.bundle.card.n_classes))
        new = annotate(self.current, self.truth, self.params, classes, {(c.row, c.col) for c in self.clicks})
        if not new:
            return None
        previous = self.score(self.current).miou
        self.clicks.extend(new)
        before = self.predict()
        sure = self.uncertainty
        saved = copy.deepcopy(self.bundle.network.state_dict())
        report = self.disca.retrain(self.source, self.source.grid.clicks_to_model(self.clicks))
        if self.params.disca.hold_classes:
            self.predictor.held_classes = classes_to_hold(before, self.clicks, len(self.names))
        after = self.predict()
        verdict = judge_round(report.check, self.names) if self.params.guard else None
        rolled_back = verdict is not None and not verdict.kept
        if rolled_back:
            self.bundle.network.load_state_dict(saved)
        self.current = before if rolled_back else after
        return {
            "round": number,
            "clicks": len(self.clicks),
            "new_clicks": [[c.row, c.col, c.class_id] for c in new],
            "miou_before_clicks": round(previous, 3),
            "miou_with_clicks": round(self.score(before).miou, 3),
            "miou_after_round": round(self.score(after).miou, 3),
            "miou_kept": round(self.score(self.current).miou, 3),
            "per_class_after_round": self.score(after).per_class(),
            "check": report.check.as_json() if report.check else None,
            "check_whole_map": RoundCheck.of(before, after, self.clicks, sure).as_json(),
            "held_classes": list(self.predictor.held_classes),
            "kept": not rolled_back,
            "reason": verdict.reason if verdict else None,
            "retrain_seconds": round(report.seconds, 2),
        }
