"""Putting blocks back together: VRT mosaics, one ranked patch layer, one heatmap range.

The coordinator does this once every block of an input is finished, from the blocks' own files
and ``run.json`` (so blocks finished by an earlier, interrupted run count the same). VRTs name
their sources relative to themselves, so the output folder can be moved or shared as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..io.outputs import CLASSES_FILE, PATCHES_FILE, UNCERTAINTY_FILE, PatchScore, write_patches
from ..io.styles import write_styles
from ..io.tiling import patch_grid
from ..model.card import ModelCard
from ..predict.patch_scores import PatchScores
from .planning import CLASSES_VRT, UNCERTAINTY_VRT, InputPlan
from .tasks import STAGING_PREFIX

HEATMAP_PERCENTILES = (2.0, 98.0)
"""As ``finish_maps`` for one raster: the heatmap of MC dropout and ODIN spans these percentiles."""


def build_vrt(target: Path, sources: Sequence[Path], final_folder: Path, card: ModelCard | None) -> None:
    """A VRT over ``sources`` written at ``target``, naming them relative to ``final_folder``
    (where it will be published); ``card``: a class map's category names."""
    options = gdal.BuildVRTOptions(resolution="highest")
    dataset = gdal.BuildVRT(str(target), [str(s) for s in sources], options=options)
    if dataset is None:
        raise RuntimeError(f"GDAL could not build {target.name} from {len(sources)} rasters")
    if card is not None:
        dataset.GetRasterBand(1).SetCategoryNames([c.name for c in card.classes])
    dataset = None  # written on close
    tree = ElementTree.parse(target)
    for element in tree.iter("SourceFilename"):
        path = Path(element.text or "")
        if element.get("relativeToVRT") == "1":
            path = target.parent / path
        element.text = os.path.relpath(path, final_folder)
        element.set("relativeToVRT", "1")
    tree.write(target, encoding="UTF-8")


def heatmap_range(histogram: np.ndarray | None) -> tuple[float, float]:
    """The 2nd–98th percentile of a histogram over [0, 1] (no histogram: the fixed 0..1)."""
    if histogram is None or histogram.sum() == 0:
        return 0.0, 1.0
    cdf = np.cumsum(histogram) / histogram.sum()
    edges = np.linspace(0.0, 1.0, len(histogram) + 1)
    low = float(edges[np.searchsorted(cdf, HEATMAP_PERCENTILES[0] / 100)])
    high = float(edges[min(len(histogram), np.searchsorted(cdf, HEATMAP_PERCENTILES[1] / 100) + 1)])
    return low, max(high, low + 1e-6)


def merged_histogram(runs: Sequence[dict[str, Any]]) -> np.ndarray | None:
    found = [np.asarray(r["histogram"], dtype=np.int64) for r in runs if r.get("histogram") is not None]
    return np.sum(found, axis=0) if found else None


def merged_patches(
    plan: InputPlan, runs: dict[str, dict[str, Any]], patch_size: int, n_classes: int
) -> list[PatchScore]:
    """The input's patch scores from its blocks' running sums (each patch lies in one block)."""
    info = plan.info
    scores = PatchScores(patch_grid(info.width, info.height, patch_size), patch_size, info.width, n_classes)
    for task in plan.blocks:
        row0, col0, row1, col1 = task.window
        local = patch_grid(col1 - col0, row1 - row0, patch_size)
        block = PatchScores(local, patch_size, col1 - col0, n_classes)
        block.load_json(runs[task.label]["patch_sums"])
        index = [
            ((row0 + p.row) // patch_size) * scores.per_row + (col0 + p.col) // patch_size for p in local
        ]
        scores.merge(index, block)
    return scores.patch_scores()


def write_input_mosaic(
    staging: Path, plan: InputPlan, runs: dict[str, dict[str, Any]], card: ModelCard, acquisition: str,
    per_tile: bool, patch_size: int,
) -> dict[str, Any]:  # fmt: skip
    """A split input's VRTs, styles and ranked patches in ``staging``; returns run.json's extras."""
    maps = {}
    for vrt, name, names in ((CLASSES_VRT, CLASSES_FILE, card), (UNCERTAINTY_VRT, UNCERTAINTY_FILE, None)):
        sources = [task.folder / name for task in plan.blocks]
        build_vrt(staging / vrt, sources, plan.folder, names)
        maps[vrt] = staging / vrt
    span = heatmap_range(merged_histogram(list(runs.values()))) if per_tile else (0.0, 1.0)
    write_styles(maps[CLASSES_VRT], maps[UNCERTAINTY_VRT], card.classes, span)
    ranked = write_patches(
        staging / PATCHES_FILE, plan.info, merged_patches(plan, runs, patch_size, card.n_classes), acquisition
    )
    return {"patches_ranked": ranked, "heatmap_range": list(span)}


def input_maps(plan: InputPlan) -> tuple[Path, Path]:
    """An input's published class map and uncertainty: its GeoTIFFs, or its VRTs when split."""
    if plan.whole:
        return plan.folder / CLASSES_FILE, plan.folder / UNCERTAINTY_FILE
    return plan.folder / CLASSES_VRT, plan.folder / UNCERTAINTY_VRT


def mosaic_problem(plans: Sequence[InputPlan]) -> str | None:
    """Why no mosaic over every input can be built (None: it can)."""
    if len(plans) < 2:
        return "one input: its own maps are the mosaic"
    if any(p.info.crs is None for p in plans):
        return "an input has no coordinate reference system, so the inputs cannot be placed together"
    if len({p.info.crs.to_wkt() for p in plans}) > 1:
        return "the inputs are in different coordinate reference systems"
    return None


def write_run_mosaic(
    staging: Path, out: Path, plans: Sequence[InputPlan], card: ModelCard, span: tuple[float, float]
) -> None:
    """``OUT/classes.vrt`` and ``OUT/uncertainty.vrt`` over every input's maps, with styles."""
    classes, uncertainty = zip(*(input_maps(p) for p in plans), strict=True)
    build_vrt(staging / CLASSES_VRT, classes, out, card)
    build_vrt(staging / UNCERTAINTY_VRT, uncertainty, out, None)
    write_styles(staging / CLASSES_VRT, staging / UNCERTAINTY_VRT, card.classes, span)


def clear_block_staging(plan: InputPlan) -> None:
    """After every block of ``plan`` is finished, no task of it can still be writing: remove the
    staging folders that lost workers left in its block folders (only folders named like ours)."""
    pattern = re.compile(rf"^{re.escape(STAGING_PREFIX)}[A-Za-z0-9_]+-\d+-[A-Za-z0-9_]+$")
    for task in plan.blocks:
        if not task.folder.is_dir():
            continue
        for old in task.folder.glob(f"{STAGING_PREFIX}*"):
            if pattern.match(old.name) and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
