"""The README's first command: the main job on a built-in example (or on the user's raster).

Generates the sample scene when no raster is given, picks the bundled model (or, until one is
bundled, a freshly initialised one, said loudly), predicts the class map, the uncertainty
heatmap and the ranked patches, and prints where everything is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .bundle import CARD_FILE, ModelBundle, create_bundle, load_bundle, save_bundle
from .card import ClassInfo, ModelCard
from .predict import PredictParameters, PredictReport, run_predict
from .progress import Monitor
from .sample_scene import CLASS_NAMES, write_scene

REPOSITORY = Path(__file__).resolve().parent.parent
MODELS = REPOSITORY / "models"
DEFAULT_MODEL = "dubai-landcover"
DUBAI_COLOURS = ("#3c1098", "#8429f6", "#6ec1e4", "#fedd3a", "#e2a929")


def bundled_models() -> list[Path]:
    return sorted(p.parent for p in MODELS.glob(f"*/{CARD_FILE}"))


def pick_model(model: Path | None, out: Path) -> tuple[ModelBundle, str | None]:
    """The requested bundle, else the bundled default, else an untrained one (with a warning)."""
    if model is not None:
        return load_bundle(model), None
    preferred = MODELS / DEFAULT_MODEL
    if (preferred / CARD_FILE).exists():
        return load_bundle(preferred), None
    if bundled_models():
        return load_bundle(bundled_models()[0]), None
    card = ModelCard(
        name="untrained-demo",
        classes=tuple(
            ClassInfo(i, n, c) for i, (n, c) in enumerate(zip(CLASS_NAMES, DUBAI_COLOURS, strict=True))
        ),
        provenance={"training": "none: freshly initialised (seed 0) because no trained model is bundled yet"},
    )
    bundle = create_bundle(card, seed=0)
    save_bundle(bundle, out / "untrained-model")
    return (
        bundle,
        "no trained model is bundled yet: this run uses an untrained network, so its maps are noise",
    )


def run_demo(out: Path, raster: Path | None, model: Path | None, progress: Monitor) -> PredictReport:
    out.mkdir(parents=True, exist_ok=True)
    if raster is None:
        progress.report(0.0, "drawing the sample scene")
        raster = write_scene(out / "scene").image
    bundle, warning = pick_model(model, out)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return run_predict(
        PredictParameters(raster=raster, out_dir=out / "prediction", bundle=bundle, cache=True), progress
    )
