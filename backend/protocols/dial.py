"""DIAL's protocol with a simulated annotator: how much do clicks help, and in which order?

1. Predict the raster without clicks and rank the patches (a non-overlapping grid) by the
   chosen order. ``random`` shuffles them with the seed; the others rank by that acquisition
   function's uncertainty, as the dock ranks in that mode (predict/patch_scores.py): weighted
   by class rarity for ``ac``, the mean for ``disca``.
2. Visit the patches in that order. The annotator clicks once per patch: at the centre of the
   patch's largest error, with the true class. A patch without errors gets no click.
3. After each click, update the maps and rank the unvisited patches again:
   - ``ac``: the clicks enter as input channels, and only the tiles the click touches are
     recomputed;
   - ``disca``: the network is also retrained on all clicks so far (one DISCA round), then the
     raster is predicted again with the clicks as channels.

   When every patch has been visited, a new pass starts.
4. mIoU (percent, over the model's classes, ignoring the labels' nodata) after every click.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import UserError
from ..io.cache import TileCache
from ..io.clicks import Click, write_clicks
from ..io.outputs import MAP_FILES
from ..io.raster import RasterSource
from ..io.tiling import Patch, TileGrid, patch_grid
from ..learn.adabn import adapt_batchnorm
from ..learn.disca import Disca, DiscaSettings, RetrainReport, anchor_from
from ..model.bundle import ModelBundle, load_bundle
from ..predict.evaluation import ArrayMaps, Scores, check_labels_grid, read_labels, score
from ..predict.held_classes import classes_to_hold
from ..predict.inference import Predictor
from ..predict.patch_scores import PATCH_SCORES, PatchScores
from ..predict.uncertainty import Acquisition
from ..predict.updates import update_tiles
from ..progress import Monitor
from ..system.ownership import check_folder, claim
from ..system.runtime import describe_device
from .agents import dial_click

ORDERS = ("entropy", "random", "margin", "mcdropout", "odin", "confidnet")
MODES = ("ac", "disca")
BENCHMARK_FILE = "benchmark.json"
PLOT_FILE = "benchmark.png"
BENCHMARK_OUTPUTS = (BENCHMARK_FILE, PLOT_FILE, "clicks.gpkg", *MAP_FILES)
"""Everything a benchmark writes in its output folder (its maps are those ``predict`` writes)."""


@dataclass
class BenchmarkParameters:
    raster: Path
    labels: Path
    out_dir: Path
    clicks: int
    mode: str = "ac"
    order: str = "entropy"
    model_dir: Path | None = None
    bundle: ModelBundle | None = None
    seed: int = 0
    device: str = "auto"
    patch_size: int = 256
    class_map: dict[int, int] | None = None
    disca: DiscaSettings = field(default_factory=DiscaSettings)
    pixel_size: float | None = None  # the raster's, when it has no CRS (io/grid.py)
    adapt_statistics: bool = False  # AdaBN on the raster before anything (learn/adabn.py)
    patch_score: str | None = None  # PATCH_SCORES; None: the mode's (ac: class-weighted, disca: mean)

    @property
    def patch_rule(self) -> str:
        return self.patch_score or ("class-weighted" if self.mode == "ac" else "mean")

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, not {self.mode}")
        if self.order not in ORDERS:
            raise UserError(f"order must be one of {', '.join(ORDERS)}, not {self.order}")
        if self.clicks < 1:
            raise UserError(f"--clicks must be at least 1, not {self.clicks}")
        if self.patch_score is not None and self.patch_score not in PATCH_SCORES:
            raise UserError(f"--patch-score must be one of {', '.join(PATCH_SCORES)}, not {self.patch_score}")


class PatchQueue:
    """Which patch the annotator visits next."""

    def __init__(self, patches: list[Patch], order: str, seed: int):
        self.patches, self.order = patches, order
        self.rng = np.random.default_rng(seed)
        self.visited: set[int] = set()
        self.shuffled = list(self.rng.permutation(len(patches))) if order == "random" else []

    def candidates(self, scores: PatchScores) -> list[Patch]:
        """The patches with valid pixels: the ones the annotator visits."""
        return [p for p in self.patches if scores.count[p.index] > 0]

    def next(self, scores: PatchScores) -> Patch | None:
        """The best unvisited patch (a new pass begins once all are visited); None if none is valid."""
        candidates = self.candidates(scores)
        if not candidates:
            return None
        if all(p.index in self.visited for p in candidates):
            self.visited.clear()
            if self.order == "random":
                self.shuffled = list(self.rng.permutation(len(self.patches)))
        if self.order == "random":
            patch = next(
                self.patches[i] for i in self.shuffled if i not in self.visited and scores.count[i] > 0
            )
        else:
            patch = max(
                (p for p in candidates if p.index not in self.visited),
                key=lambda p: (scores.score(p.index), -p.index),
            )
        self.visited.add(patch.index)
        return patch


def run_benchmark(params: BenchmarkParameters, monitor: Monitor | None = None) -> dict[str, Any]:
    params.check()
    check_folder(params.out_dir, BENCHMARK_OUTPUTS)  # before the work, not after it
    monitor = monitor or Monitor()
    started = time.perf_counter()
    bundle = params.bundle or (load_bundle(params.model_dir) if params.model_dir else None)
    if bundle is None:
        raise UserError("no model given (--model DIR)")
    if params.mode == "disca":
        bundle = replace(bundle, network=copy.deepcopy(bundle.network))  # keeps the ConfidNet head
    card = bundle.card
    truth = read_labels(params.labels, params.class_map)
    source = RasterSource(params.raster, card.input, params.pixel_size)
    with source, tempfile.TemporaryDirectory() as scratch:
        info = source.grid.raster
        check_labels_grid(truth, params.labels, info.width, info.height)
        if params.adapt_statistics:
            bundle = replace(bundle, network=copy.deepcopy(bundle.network))
            adapt_batchnorm(bundle.network, card, source)
        run = _Annotation(params, bundle, source, truth, Path(scratch))
        monitor.report(0.0, "initial prediction")
        t0 = time.perf_counter()
        run.predict_all()
        initial_seconds = time.perf_counter() - t0
        initial = run.score()
        steps = _click_loop(run, params, monitor)
        final = run.score() if steps else initial
        claim(params.out_dir, BENCHMARK_OUTPUTS)
        write_maps(params.out_dir, info, card, run.raster_maps())
    result = {
        "initial_miou": round(initial.miou, 3),
        "final_miou": round(final.miou, 3),
        "per_class_iou": final.per_class(),
        "initial_per_class_iou": initial.per_class(),
        "steps": steps,
        "raster": str(Path(params.raster).resolve()),
        "labels": str(Path(params.labels).resolve()),
        "model_grid": source.grid.describe() if source.grid.scaled else None,
        "model": {"name": card.name, "sha256": card.weights_sha256},
        "mode": params.mode,
        "order": params.order,
        "patch_score": params.patch_rule,
        "clicks_requested": params.clicks,
        "patch_size": params.patch_size,
        "seed": params.seed,
        "disca": asdict(params.disca) if params.mode == "disca" else None,
        "adapt_statistics": params.adapt_statistics,
        "device": describe_device(run.predictor.device),
        "initial_prediction_seconds": round(initial_seconds, 3),
        "seconds_per_click": round(float(np.mean([s["seconds"] for s in steps])), 3) if steps else None,
        "total_seconds": round(time.perf_counter() - started, 1),
        "engine_version": __version__,
    }
    (params.out_dir / BENCHMARK_FILE).write_text(json.dumps(result, indent=2) + "\n")
    write_clicks(params.out_dir / "clicks.gpkg", run.clicks, source.info, card)
    plot_runs([result], params.out_dir / PLOT_FILE)
    return result


class _Annotation:
    """The model, the raster, the truth and the clicks so far, with the maps they give."""

    def __init__(
        self,
        params: BenchmarkParameters,
        bundle: ModelBundle,
        source: RasterSource,
        truth: np.ndarray,
        scratch: Path,
    ):
        card, info = bundle.card, source.info
        self.card, self.source = card, source
        self.raster_truth = truth  # scored against, on the raster's grid
        self.truth = source.grid.to_model_array(truth)  # what the annotator sees, on the network's
        self.names = [c.name for c in card.classes]
        order = "entropy" if params.order == "random" else params.order
        acquisition = Acquisition(order, mc_rate=card.mc_dropout_rate)
        anchor = anchor_from(copy.deepcopy(bundle.network)) if params.mode == "disca" else None
        self.predictor = Predictor(bundle, params.device, acquisition, owns_network=params.mode == "ac")
        self.disca = (
            Disca(bundle.network, card, anchor, self.predictor.device, params.disca) if anchor else None
        )
        self.grid = TileGrid(info.width, info.height, self.predictor.tile, self.predictor.overlap)
        self.patches = patch_grid(info.width, info.height, params.patch_size)
        self.patch_size, self.patch_rule = params.patch_size, params.patch_rule
        self.cache = TileCache.create(
            scratch / "cache", len(self.grid), self.predictor.channels, self.predictor.tile, {}
        )
        self.clicks: list[Click] = []
        self.maps, self.scores = ArrayMaps(info.height, info.width), None

    def predict_all(self) -> None:
        info = self.source.info
        self.maps = ArrayMaps(info.height, info.width)
        self.scores = PatchScores(
            self.patches, self.patch_size, info.width, self.card.n_classes, self.patch_rule
        )
        # The per-tile cache serves AC's incremental updates; DISCA re-predicts everything.
        cache = self.cache if self.disca is None else None
        self.predictor.predict_raster(self.source, self.clicks, self.maps, self.scores, cache)  # type: ignore[arg-type]

    def add(self, click: Click) -> RetrainReport | None:
        """The maps after one more click: AC updates the tiles it touches, DISCA retrains and
        predicts everything (its round guard may roll the round back). Returns DISCA's report."""
        self.clicks.append(click)
        if self.disca is None:
            touched = self.grid.tiles_within_distance(click.row, click.col, self.card.clicks.radius)
            maps, scores = self.maps, self.scores
            update_tiles(self.predictor, self.source, self.clicks, touched, self.cache, maps, scores)  # type: ignore[arg-type]
            return None
        hold = self.disca.settings.hold_classes
        held = classes_to_hold(self.maps.classes, self.clicks, self.card.n_classes) if hold else ()
        report = self.disca.retrain(self.source, self.clicks)
        self.predictor.held_classes = held
        self.predict_all()
        return report

    def score(self) -> Scores:
        return score(self.source.grid.to_raster_array(self.maps.classes), self.raster_truth, self.names)

    def raster_maps(self) -> ArrayMaps:
        """The maps on the raster's grid (nearest neighbour), as the benchmark writes them."""
        grid = self.source.grid
        maps = ArrayMaps(grid.raster.height, grid.raster.width)
        maps.classes, maps.uncertainty = (
            grid.to_raster_array(self.maps.classes),
            grid.to_raster_array(self.maps.uncertainty),
        )
        return maps


def _click_loop(run: _Annotation, params: BenchmarkParameters, monitor: Monitor) -> list[dict[str, Any]]:
    """DIAL's annotator: one click per visited patch, in the order asked for, at the centre of the
    patch's largest error, until the budget is spent or nothing is left to correct."""
    queue = PatchQueue(run.patches, params.order, params.seed)
    steps: list[dict[str, Any]] = []
    # Patches visited since the last click without an error in them. The maps change only with a
    # click, so once every patch is among them nothing is left to correct. (Counting visits
    # instead stopped LoveDA runs early: after a pass a new pass may begin at a patch without error.)
    fruitless: set[int] = set()
    while len(run.clicks) < params.clicks:
        monitor.check()
        patch = queue.next(run.scores)
        if patch is None or fruitless >= {p.index for p in queue.candidates(run.scores)}:
            break  # nothing left to correct
        click = dial_click(run.maps.classes, run.truth, patch)
        if click is None:
            fruitless.add(patch.index)
            continue
        fruitless.clear()
        step_started = time.perf_counter()
        retrained = run.add(click)
        seconds = time.perf_counter() - step_started
        current = run.score()
        steps.append({
            "clicks": len(run.clicks),
            "miou": round(current.miou, 3),
            "per_class_iou": current.per_class(),
            "seconds": round(seconds, 3),
            "retrain_seconds": None if retrained is None else round(retrained.seconds, 3),
            "kept": None if retrained is None else retrained.kept,
            "check": None if retrained is None or retrained.check is None else retrained.check.as_json(),
            "held_classes": None if retrained is None else list(run.predictor.held_classes),
            "patch": patch.index,
            "click": [click.row, click.col, click.class_id],
        })  # fmt: skip
        n = len(run.clicks)
        monitor.report(n / params.clicks, f"click {n}/{params.clicks}: mIoU {current.miou:.2f}")
    return steps


def write_maps(directory: Path, info: Any, card: Any, maps: ArrayMaps) -> None:
    """The final class and uncertainty maps, as ``predict`` writes them (GeoTIFFs with styles)."""
    from ..io.outputs import MapBlock, MapWriter, finish_maps

    writer = MapWriter(directory, info, card)
    try:
        writer.write(MapBlock(0, 0, maps.classes, maps.uncertainty, ~np.isnan(maps.uncertainty)))
    finally:
        writer.close()
    finish_maps(directory, card, {"model": card.name}, fixed_range=True)


def run_label(result: dict[str, Any]) -> str:
    return f"{Path(result['raster']).stem} · {result['mode'].upper()} · {result['order']}"


def plot_runs(results: list[dict[str, Any]], path: Path, title: str | None = None) -> Path:
    """mIoU against clicks for one or more benchmark runs, on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for result in results:
        xs = [0] + [s["clicks"] for s in result["steps"]]
        ys = [result["initial_miou"]] + [s["miou"] for s in result["steps"]]
        axes.plot(xs, ys, marker="." if len(xs) < 60 else None, label=run_label(result))
    axes.set_xlabel("clicks")
    axes.set_ylabel("mIoU (%)")
    axes.grid(alpha=0.3)
    axes.set_title(title or "mIoU against simulated clicks")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
