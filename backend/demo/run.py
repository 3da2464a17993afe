"""The README's first command: the whole loop, headless, on a built-in example (or your raster).

1. Draw the sample scene with its labels, unless a raster is given.
2. Take the bundled model (or, until one is bundled, an untrained network, said loudly).
3. Predict the class map, the uncertainty heatmap and the ranked patches.
4. With labels: let the simulated annotator click the top patches with AC, then with DISCA.
5. Write ``report.html``: pictures of all that, with mIoU against clicks.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..model.bundle import CARD_FILE, ModelBundle, create_bundle, load_bundle, save_bundle
from ..model.card import ClassInfo, ModelCard
from ..predict.evaluation import read_labels, score
from ..predict.job import PredictParameters, run_predict
from ..progress import Monitor
from ..protocols.dial import BenchmarkParameters, plot_runs, run_benchmark
from ..system.ownership import check_folder, claim
from .report import Figure, class_rgb, image_rgb, read_thumbnail, save_map, write_html
from .scene import CLASS_NAMES, write_scene

REPOSITORY = Path(__file__).resolve().parents[2]  # the repository (or, in the zip, the plugin)
MODELS = REPOSITORY / "models"
DEFAULT_MODEL = "dubai-landcover"
DUBAI_COLOURS = ("#3c1098", "#8429f6", "#6ec1e4", "#fedd3a", "#e2a929")
DEMO_FILES = {
    ".": ("report.html", "summary.json"),
    "scene": ("sample_image.tif", "sample_labels.tif"),
    "report": (
        "uncertainty.png",
        "classes-before.png",
        "classes-after-ac.png",
        "classes-after-disca.png",
        "miou.png",
    ),
}
"""What the demo writes itself, per sub-folder (the maps and benchmarks look after their own)."""


@dataclass
class DemoResult:
    report: Path
    prediction: Path
    miou: dict[str, float]


def bundled_models() -> list[Path]:
    return sorted(p.parent for p in MODELS.glob(f"*/{CARD_FILE}"))


def pick_model(model: Path | None, out: Path) -> tuple[Path, str | None]:
    """The requested bundle, else the bundled default, else an untrained one (with a warning)."""
    if model is not None:
        return model, None
    if (MODELS / DEFAULT_MODEL / CARD_FILE).exists():
        return MODELS / DEFAULT_MODEL, None
    if bundled_models():
        return bundled_models()[0], None
    card = ModelCard(
        name="untrained-demo",
        classes=tuple(
            ClassInfo(i, n, c) for i, (n, c) in enumerate(zip(CLASS_NAMES, DUBAI_COLOURS, strict=True))
        ),
        provenance={"training": "none: freshly initialised (seed 0) because no trained model is bundled yet"},
    )
    target = out / "untrained-model"
    save_bundle(ModelBundle(card, create_bundle(card, seed=0).network), target)
    return target, "no trained model is bundled: this run uses an untrained network, so its maps are noise"


def run_demo(
    out: Path,
    raster: Path | None = None,
    labels: Path | None = None,
    model: Path | None = None,
    clicks: int = 15,
    monitor: Monitor | None = None,
) -> DemoResult:
    monitor = monitor or Monitor()
    for folder, names in DEMO_FILES.items():  # before any work: nobody else's file is replaced
        check_folder(out / folder, names)
    claim(out, DEMO_FILES["."])
    notes = []
    if raster is None:
        monitor.report(0.0, "drawing the sample scene")
        claim(out / "scene", DEMO_FILES["scene"])
        scene = write_scene(out / "scene")
        raster, labels = scene.image, scene.labels
        notes.append(
            "The scene is synthetic (drawn by backend/sample_scene.py with the colours of the Dubai imagery "
            "the model was trained on): the model gets most of it right, and the clicks fix what it misses "
            "(mostly the drawn buildings)."
        )
    model_dir, warning = pick_model(model, out)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        notes.append(warning)
    card = load_bundle(model_dir).card
    prediction = out / "prediction"
    steps = 0.3 if labels is None else 0.15
    report = run_predict(PredictParameters(raster=raster, out_dir=prediction, model_dir=model_dir),
                         monitor.scaled(0.02, steps))  # fmt: skip
    runs, miou = [], {}
    if labels is not None:
        truth = read_labels(labels)
        with rasterio_open(report.classes) as dataset:
            miou["initial"] = score(dataset.read(1), truth, [c.name for c in card.classes]).miou
        for i, mode in enumerate(("ac", "disca")):
            start = steps + i * (0.95 - steps) / 2
            result = run_benchmark(
                BenchmarkParameters(
                    raster=raster,
                    labels=labels,
                    out_dir=out / mode,
                    clicks=clicks,
                    mode=mode,
                    model_dir=model_dir,
                ),
                monitor.scaled(start, start + (0.95 - steps) / 2),
            )
            runs.append(result)
            miou[mode] = result["final_miou"]
    else:
        notes.append("No reference labels were given (--labels): the simulated clicks were skipped.")
    monitor.report(0.96, "drawing the report")
    path = _report(out, raster, report, runs, card, notes)
    monitor.report(1.0, "done")
    return DemoResult(path, prediction, miou)


def rasterio_open(path: Path):
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _report(out: Path, raster: Path, report, runs: list[dict], card: ModelCard, notes: list[str]) -> Path:
    from osgeo import ogr

    pictures = out / "report"
    claim(pictures, DEMO_FILES["report"])
    image = image_rgb(raster, card.input.bands)
    scale = image.shape[1] / report.run["width"]
    source = ogr.Open(str(report.patches))
    patches = [f.items() for f in source.GetLayerByName("patches")]
    source = None
    uncertainty = read_thumbnail(report.uncertainty)
    title = "Uncertainty and patch ranks"
    save_map(pictures / "uncertainty.png", image, uncertainty, title, patches=patches, scale=scale)
    before = class_rgb(read_thumbnail(report.classes), card)
    save_map(pictures / "classes-before.png", image, before, "Class map, no clicks", legend=card)
    figures = [
        Figure(
            "uncertainty.png", "Uncertainty (entropy) over the image, with the ten most uncertain patches"
        ),
        Figure("classes-before.png", "Class map predicted without clicks"),
    ]
    run = report.run
    facts = [
        ("raster", str(raster)),
        ("model", f"{card.name} ({card.architecture}/{card.encoder})"),
        ("device", run["device"]),
        ("prediction", f"{run['seconds']['total']:.1f} s for {run['tile_count']} tiles"),
    ]
    for result in runs:
        mode, n = result["mode"].upper(), len(result["steps"])
        after = class_rgb(read_thumbnail(out / result["mode"] / "classes.tif"), card)
        name = f"classes-after-{result['mode']}.png"
        save_map(pictures / name, image, after, f"Class map after {n} clicks ({mode})", legend=card)
        figures.append(Figure(name, f"After {n} simulated clicks with {mode}"))
        change = f"{result['initial_miou']:.1f} → {result['final_miou']:.1f} % after {n} clicks"
        facts.append((f"mIoU with {mode}", f"{change}, {result['seconds_per_click']:.1f} s per click"))
    if runs:
        plot_runs(runs, pictures / "miou.png", "mIoU against simulated clicks (entropy order)")
        figures.insert(
            1, Figure("miou.png", "mIoU after every click: AC (clicks as input) and DISCA (retrained)")
        )
    (out / "summary.json").write_text(json.dumps({"facts": dict(facts), "notes": notes}, indent=2))
    figures = [Figure(f"report/{f.file}", f.caption) for f in figures]
    return write_html(out / "report.html", "Interactive segmentation: demo report", figures, facts, notes)
