"""domain: adapting the bundled models to other imagery with DISCA clicks (DIAL's use case).

- The binary building model on the Tanzania drone orthophoto (7.7 cm, EPSG:32737). Its labels
  come from the building polygons (lon/lat GeoJSON) rasterised onto the image grid. The image can
  be resampled (``--tanzania-pixel``) nearer the training imagery's scale.
- The 5-class land-cover model on the three LoveDA crops (0.3 m, another continent and sensor;
  no CRS, so their pixel size is given as ``--pixel-size`` would: ``--loveda-pixel``).
  The labels are re-coded as ../shared/data/README.md says: building→building, road→road,
  water→water, barren and background→land, forest and agriculture→vegetation.

Both run DIAL's annotator: patches in entropy order, one click at a time, retraining after each
click. The figures are IoU (building) or mIoU before and after 10 and 20 clicks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.protocols.dial import BenchmarkParameters, plot_runs, run_benchmark

from . import OUT
from .machine import describe_machine
from .options import add_disca_seed, add_disca_steps
from .report import header, save, say, started
from .scenes import SHARED_DATA

NAME = "domain"
SUMMARY = "DISCA adapting the building model to Tanzania and the land-cover model to LoveDA"
LOVEDA_TO_DUBAI = {1: 1, 2: 0, 3: 2, 4: 4, 5: 1, 6: 3, 7: 3}
"""LoveDA coding → the Dubai classes (building 0, land 1, road 2, vegetation 3, water 4)."""
REPOSITORY = Path(__file__).resolve().parent.parent
CASES = ("tanzania", "loveda-0", "loveda-1", "loveda-2")
LOVEDA_PIXEL = 0.3
"""LoveDA's pixel size in metres (its paper: 0.3 m aerial imagery). The crops carry no CRS, so the
benchmarks give it as an analyst gives ``--pixel-size``; 0 reads them as they are (before
2026-12-06 every LoveDA figure did, as if their pixels were the model's 1 m)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--building-model", type=Path, default=REPOSITORY / "models" / "dubai-buildings")
    parser.add_argument("--landcover-model", type=Path, default=REPOSITORY / "models" / "dubai-landcover")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument(
        "--tanzania-pixel",
        type=float,
        default=0.0774800032377243,
        help="pixel size (m) to resample the Tanzania image to (default: its own, 7.7 cm)",
    )
    add_loveda_pixel(parser)
    parser.add_argument("--device", default="auto")
    add_disca_seed(parser)
    add_disca_steps(parser)
    parser.add_argument("--disca-lr", type=float, help="DISCA learning rate (default: the engine's)")
    parser.add_argument("--anchor-weight", type=float, help="DISCA's λ (default: its own)")
    parser.add_argument(
        "--weight-average", type=float, help="DISCA's rounds' weight average β (default: its own; 0: none)"
    )
    parser.add_argument("--modes", default="disca,ac", help="comma-separated: disca, ac")
    parser.add_argument(
        "--no-spread", action="store_true", help="learn each click's pixel alone, not its superpixel"
    )
    parser.add_argument(
        "--no-hold-classes", action="store_true", help="let a round put classes no click names on the map"
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated, from {', '.join(CASES)} (default: all)",
    )


def add_loveda_pixel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loveda-pixel",
        type=float,
        default=LOVEDA_PIXEL,
        help=f"the LoveDA crops' pixel size in m, as --pixel-size gives it (default {LOVEDA_PIXEL}, "
        "LoveDA's own; 0: none, read as they are)",
    )


def prepare_tanzania(pixel: float) -> tuple[Path, Path]:
    """The image (resampled to ``pixel`` metres if asked) and its building labels on its grid."""
    folder = OUT / "domain" / f"tanzania-{pixel:.3f}m"
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = folder / "image.tif", folder / "labels.tif"
    if image.exists() and labels.exists():
        return image, labels
    with rasterio.open(SHARED_DATA / "tanzania" / "image.tif") as src:
        factor = pixel / src.res[0]
        width, height = round(src.width / factor), round(src.height / factor)
        transform = src.transform * src.transform.scale(src.width / width, src.height / height)
        data = src.read(out_shape=(src.count, height, width), resampling=Resampling.average)
        profile = src.profile | {
            "width": width,
            "height": height,
            "transform": transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        profile.pop("photometric", None)
        with rasterio.open(image, "w", **profile) as dst:
            dst.write(data)
        crs = src.crs
    polygons = json.loads((SHARED_DATA / "tanzania" / "buildings.geojson").read_text())["features"]
    shapes = [
        (transform_geom("OGC:CRS84", crs, f["geometry"]), 1)
        for f in polygons
        if f.get("geometry") and f["geometry"].get("coordinates")  # one feature has an empty polygon
    ]
    burned = rasterize(shapes, out_shape=(height, width), transform=transform, fill=0, dtype="uint8")
    with rasterio.open(
        labels,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=255,
    ) as dst:
        dst.write(burned, 1)
    return image, labels


def run_case(
    name: str,
    image: Path,
    labels: Path,
    model: Path,
    mode: str,
    clicks: int,
    device: str,
    settings: DiscaSettings,
    class_map: dict[int, int] | None,
    patch: int,
    pixel_size: float | None = None,
) -> dict[str, Any]:
    out = OUT / "domain" / "runs" / f"{name}-{mode}"
    return run_benchmark(
        BenchmarkParameters(
            raster=image,
            labels=labels,
            out_dir=out,
            clicks=clicks,
            mode=mode,
            order="entropy",
            model_dir=model,
            device=device,
            patch_size=patch,
            class_map=class_map,
            disca=settings,
            pixel_size=pixel_size,
        )
    )


def at(result: dict[str, Any], clicks: int, key: str | None) -> float | None:
    """mIoU (or one class's IoU) after ``clicks`` clicks (0 = before)."""
    if clicks == 0:
        return result["initial_miou"] if key is None else result["initial_per_class_iou"][key]
    for step in result["steps"]:
        if step["clicks"] == clicks:
            return step["miou"] if key is None else step["per_class_iou"][key]
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    begun = started()
    if not (SHARED_DATA / "tanzania" / "image.tif").is_file():
        raise UserError(f"{SHARED_DATA} is absent: the domain-adaptation data live there")
    settings = DiscaSettings(spread=not args.no_spread, hold_classes=not args.no_hold_classes, seed=args.seed)
    settings = replace(
        settings,
        **{
            k: v
            for k, v in (
                ("learning_rate", args.disca_lr),
                ("anchor_weight", args.anchor_weight),
                ("weight_average", args.weight_average),
                ("steps", args.disca_steps),
            )
            if v is not None
        },
    )
    machine = describe_machine(
        __import__("backend.system.runtime", fromlist=["resolve_device"]).resolve_device(args.device)
    )
    header("domain adaptation with clicks", machine, {"disca": str(settings), "clicks": str(args.clicks)})
    rows, results = [], {}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := set(wanted) - set(CASES):
        raise UserError(f"unknown case(s) {', '.join(sorted(unknown))}: choose from {', '.join(CASES)}")
    cases = []
    if "tanzania" in wanted:
        image, labels = prepare_tanzania(args.tanzania_pixel)
        name = f"tanzania-{args.tanzania_pixel:.3f}m"
        cases.append((name, image, labels, args.building_model, None, "building", None))
    for i in (int(c.split("-")[1]) for c in wanted if c.startswith("loveda")):
        cases.append(
            (
                f"loveda-{i}" + (f"-{args.loveda_pixel:g}m" if args.loveda_pixel else "-as-is"),
                SHARED_DATA / "loveda" / "images" / f"{i}.png",
                SHARED_DATA / "loveda" / "labels" / f"{i}.png",
                args.landcover_model,
                LOVEDA_TO_DUBAI,
                None,
                args.loveda_pixel or None,
            )
        )
    for name, img, lbl, model, class_map, key, pixel in cases:
        for mode in modes:
            result = run_case(
                name, img, lbl, model, mode, args.clicks, args.device, settings, class_map, 256, pixel
            )
            results[f"{name}-{mode}"] = result
            figures = [at(result, n, key) for n in (0, 10, 20)]
            measure = "building IoU" if key else "mIoU"
            rows.append((name, mode, measure, *figures))
            say(
                f"{name:>22} {mode:>5} {measure:>12}: "
                + " → ".join("n/a" if f is None else f"{f:.1f}" for f in figures)
                + "  (0, 10, 20 clicks)"
            )
    loveda = [r for r in rows if r[0].startswith("loveda")]
    for mode in modes if loveda else ():
        mean = [
            np.mean([r[3 + j] for r in loveda if r[1] == mode and r[3 + j] is not None]) for j in range(3)
        ]
        say(f"{'loveda mean':>22} {mode:>5} {'mIoU':>12}: " + " → ".join(f"{m:.1f}" for m in mean))
    plot_runs(list(results.values()), OUT / "domain" / "domain.png", "Domain adaptation with clicks")
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": machine,
        "settings": str(settings),
        "rows": rows,
        "runs": {k: {"initial": v["initial_miou"], "steps": v["steps"]} for k, v in results.items()},
    }
    save(NAME, data)
    return data
