"""An untrained model bundle for the user's own class list: the start of a SIAL session, where
the network learns from clicks alone, or of a training run (``create-model``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from ..errors import UserError
from ..io.raster import inspect_raster
from ..model.bundle import create_bundle, save_bundle
from ..model.card import ClassInfo, ClickEncoding, InputSpec, ModelCard, Normalization

PALETTE = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf", "#999999")


def parse_classes(text: str) -> tuple[ClassInfo, ...]:
    """``"building, water:#1f78b4, …"`` → classes; a class without a colour takes the palette's."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if len(entries) < 2:
        raise UserError("a model needs at least two class names, separated by commas")
    classes = []
    for index, entry in enumerate(entries):
        name, _, color = entry.partition(":")
        classes.append(ClassInfo(index, name.strip(), color.strip() or PALETTE[index % len(PALETTE)]))
    names = [c.name for c in classes]
    if len(set(names)) != len(names) or not all(names):
        raise UserError(f"class names must be distinct and non-empty, not {', '.join(names)}")
    return tuple(classes)


def fresh_card(
    classes: Sequence[ClassInfo],
    name: str,
    bands: Sequence[int] = (1, 2, 3),
    dtype: str = "uint8",
    architecture: str = "Linknet",
    encoder: str = "resnet34",
    clicks: bool = True,
    seed: int = 0,
) -> ModelCard:
    """The card of a network that has learnt nothing yet. 8-bit imagery maps 0..255 to 0..1;
    any other data type is stretched between each band's 2nd and 98th percentiles."""
    n = len(bands)
    method = "fixed" if dtype == "uint8" else "percentile"
    card = ModelCard(
        name=name,
        classes=tuple(classes),
        architecture=architecture,
        encoder=encoder,
        input=InputSpec(
            bands=tuple(bands),
            band_names=tuple(f"band {b}" for b in bands),
            dtype=dtype,
            normalization=Normalization(
                method=method, min=(0.0,) * n, max=(255.0,) * n, mean=(0.5,) * n, std=(0.25,) * n
            ),
        ),
        clicks=ClickEncoding(enabled=clicks),
        provenance={"training": "none: freshly initialised", "seed": seed},
    )
    return ModelCard.from_json(card.to_json())  # the same validation a reader applies


def data_bands(raster: str | Path) -> tuple[int, ...]:
    """The raster's bands that hold data: all but an alpha band (GDAL reads that as a mask)."""
    info = inspect_raster(raster)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(info.path) as dataset:
            interpretation = dataset.colorinterp
    return tuple(i + 1 for i in range(info.count) if interpretation[i] != ColorInterp.alpha)


def create_model_for_raster(raster: str | Path, classes: Sequence[ClassInfo], directory: str | Path) -> Path:
    """An untrained bundle in ``directory`` that reads every data band of ``raster``, without
    click channels: a SIAL network learns from clicks as labels, never as inputs."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise UserError(f"{directory} already exists: choose another session name")
    info = inspect_raster(raster)
    card = fresh_card(classes, directory.name, data_bands(raster), info.dtype, clicks=False)
    return save_bundle(create_bundle(card, seed=0), directory)
