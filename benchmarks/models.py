"""Which model bundle the benchmarks time: the bundled one, else an untrained one.

Timing does not depend on whether the weights are trained, only on the architecture, so an
untrained LinkNet/resnet34 (the default card) stands in until a model is bundled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.demo.run import DUBAI_COLOURS
from backend.demo.scene import CLASS_NAMES
from backend.model.bundle import CARD_FILE, create_bundle, read_card, save_bundle
from backend.model.card import ClassInfo, ModelCard

from . import OUT, REPOSITORY

BUNDLED = REPOSITORY / "models" / "dubai-landcover"
UNTRAINED = OUT / "untrained-model"
UNTRAINED_NAME = "untrained-benchmark"


@dataclass(frozen=True)
class ModelChoice:
    directory: Path
    description: str


def untrained_card() -> ModelCard:
    classes = tuple(
        ClassInfo(i, name, colour)
        for i, (name, colour) in enumerate(zip(CLASS_NAMES, DUBAI_COLOURS, strict=True))
    )
    return ModelCard(
        name=UNTRAINED_NAME,
        classes=classes,
        provenance={"training": "none: freshly initialised (seed 0) for timing benchmarks"},
    )


def choose_model(requested: Path | None) -> ModelChoice:
    if requested is not None:
        return _describe(requested, "given with --model")
    if (BUNDLED / CARD_FILE).is_file():
        return _describe(BUNDLED, "bundled")
    if not (UNTRAINED / CARD_FILE).is_file() or read_card(UNTRAINED).name != UNTRAINED_NAME:
        save_bundle(create_bundle(untrained_card(), seed=0), UNTRAINED)
    return _describe(
        UNTRAINED, "untrained (seed 0): no model is bundled yet; timing does not depend on weights"
    )


def _describe(directory: Path, origin: str) -> ModelChoice:
    card = read_card(directory)
    clicks = f"{card.n_classes} click channels" if card.clicks.enabled else "no click channels"
    text = (
        f"{card.name} {card.version} ({card.architecture}/{card.encoder}, {card.n_classes} classes, "
        f"{clicks}, tile {card.tiling.tile_size}/{card.tiling.overlap}) — {origin}, {directory}"
    )
    return ModelChoice(directory, text)
