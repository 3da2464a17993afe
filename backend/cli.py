"""Command line: ``python -m backend predict|info|create-model …`` (the CLI contract).

Bad input ends with one line on stderr and exit status 2; no traceback unless SIAL_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import Cancelled, UserError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_CANCELLED = 130


class TerminalProgress:
    """A one-line progress display on stderr (a line every 10 % when not a terminal)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self.last_decile = -1
        self.started = time.perf_counter()

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        eta = f", {elapsed / fraction - elapsed:.0f} s left" if 0.02 < fraction < 1 else ""
        text = f"{self.label}: {fraction * 100:5.1f} % {message}{eta}"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(78)[:120])
            if fraction >= 1:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            print(text, file=sys.stderr, flush=True)


def _existing_path(text: str) -> Path:
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    from .runtime import DEVICE_CHOICES
    from .uncertainty import ACQUISITIONS

    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Interactive and active-learning segmentation of georeferenced rasters.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="class map, uncertainty heatmap and ranked patches for a raster",
        description="Writes OUT/classes.tif, OUT/uncertainty.tif, OUT/patches.gpkg and OUT/run.json.",
    )
    predict.add_argument("raster", type=_existing_path, help="any GDAL-readable raster")
    predict.add_argument(
        "--model", required=True, type=Path, help="model bundle folder (model.json + weights)"
    )
    predict.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    predict.add_argument(
        "--clicks", type=Path, help="point layer (GeoPackage …) with a class_id field, any CRS"
    )
    predict.add_argument(
        "--acquisition",
        choices=ACQUISITIONS,
        default="entropy",
        help="uncertainty measure (default: entropy)",
    )
    predict.add_argument(
        "--mc-passes", type=int, default=5, help="stochastic passes for mcdropout (default: 5)"
    )
    predict.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default: auto (the GPU if there is one)"
    )
    predict.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's, 512)")
    predict.add_argument(
        "--overlap", type=int, help="tile overlap in pixels (default: the model card's, 128)"
    )
    predict.add_argument(
        "--batch-size", type=int, help="tiles per forward pass (default: 2 on CPU, 16 on CUDA)"
    )
    predict.add_argument("--patch-size", type=int, help="side of the ranked patches (default: the tile size)")
    predict.add_argument(
        "--cache",
        action="store_true",
        help="keep per-tile outputs in OUT/.cache so a later run with more clicks "
        "recomputes only the tiles they touch",
    )
    predict.add_argument(
        "--skip-outside-clicks",
        action="store_true",
        help="ignore clicks outside the raster instead of stopping",
    )

    demo = commands.add_parser(
        "demo", help="run the main job on a built-in example scene (or on your raster)"
    )
    demo.add_argument("raster", nargs="?", type=Path, help="your raster (default: a generated sample scene)")
    demo.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)"
    )
    demo.add_argument("--model", type=Path, help="model bundle (default: the bundled land-cover model)")

    info = commands.add_parser("info", help="describe a model bundle or a raster")
    info.add_argument("path", type=Path, help="a model bundle folder or a raster")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    create = commands.add_parser(
        "create-model",
        help="write a freshly initialised model bundle (a start for training, or for tests)",
    )
    create.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    create.add_argument(
        "--classes", required=True, help="comma-separated class names, optionally name:#rrggbb"
    )
    create.add_argument("--name", help="model name (default: the folder's name)")
    create.add_argument("--bands", default="1,2,3", help="1-based raster bands to read (default: 1,2,3)")
    create.add_argument("--architecture", default="Linknet", help="segmentation-models-pytorch architecture")
    create.add_argument("--encoder", default="resnet34", help="segmentation-models-pytorch encoder")
    create.add_argument("--no-clicks", action="store_true", help="no click channels")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = bool(os.environ.get("SIAL_DEBUG"))
    if not debug:
        warnings.simplefilter("ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import limit_gdal_cache, tune_allocator

    limit_gdal_cache()
    tune_allocator()
    handler: Callable[[argparse.Namespace], int] = {
        "predict": _predict,
        "info": _info,
        "demo": _demo,
        "create-model": _create_model,
    }[args.command]
    try:
        return handler(args)
    except UserError as exc:
        _clear_progress_line(args)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        _clear_progress_line(args)
        print("cancelled: no output was left half-written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        _clear_progress_line(args)
        if debug:
            traceback.print_exc()
        print(
            f"internal error: {type(exc).__name__}: {exc} (a bug: rerun with SIAL_DEBUG=1 and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _clear_progress_line(args: argparse.Namespace) -> None:
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")


def _predict(args: argparse.Namespace) -> int:
    from .predict import PredictParameters, run_predict
    from .progress import Monitor

    params = PredictParameters(
        raster=args.raster,
        out_dir=args.out,
        model_dir=args.model,
        clicks=args.clicks,
        acquisition=args.acquisition,
        mc_passes=args.mc_passes,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        cache=args.cache,
        skip_outside_clicks=args.skip_outside_clicks,
    )
    report = run_predict(params, Monitor(TerminalProgress("predict", not args.quiet)))
    _print_report(report)
    return 0


def _print_report(report: Any) -> None:
    for notice in report.notices:
        print(f"note: {notice}", file=sys.stderr)
    run = report.run
    print(
        f"{run['mode']} prediction of {run['width']} × {run['height']} px on {run['device']}: "
        f"{run['tiles_computed']}/{run['tile_count']} tiles in {run['seconds']['total']:.1f} s, "
        f"peak memory {run['peak_memory_mib']:.0f} MiB"
    )
    for path in (report.classes, report.uncertainty, report.patches, report.out_dir / "run.json"):
        print(f"  {path}")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .progress import Monitor

    report = run_demo(args.out, args.raster, args.model, Monitor(TerminalProgress("demo", not args.quiet)))
    _print_report(report)
    print(f"Open {report.out_dir.resolve()} in QGIS (classes.tif, uncertainty.tif, patches.gpkg).")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .bundle import CARD_FILE

    path: Path = args.path
    if (path.is_dir() and (path / CARD_FILE).exists()) or path.name == CARD_FILE:
        data = _model_info(path)
    elif path.is_dir():
        raise UserError(f"{path} is a folder without {CARD_FILE}: neither a model bundle nor a raster")
    else:
        data = _raster_info(path)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_tree(data)
    return 0


def _model_info(path: Path) -> dict[str, Any]:
    from .bundle import load_bundle

    bundle = load_bundle(path)
    card = bundle.card
    parameters = sum(p.numel() for p in bundle.network.parameters())
    data = card.to_json()
    data["parameters"] = parameters
    data["in_channels"] = card.in_channels
    data["kind"] = "model bundle"
    return data


def _raster_info(path: Path) -> dict[str, Any]:
    import rasterio

    from .raster import inspect_raster
    from .tiling import TileGrid

    info = inspect_raster(path)
    with rasterio.open(path) as dataset:
        blocks = dataset.block_shapes[0]
        overviews = dataset.overviews(1)
        masks = [str(flag[0].name) if flag else "" for flag in dataset.mask_flag_enums]
    grid = TileGrid(info.width, info.height)
    return {
        "kind": "raster",
        "path": str(info.path),
        "size": [info.width, info.height],
        "bands": info.count,
        "dtype": info.dtype,
        "crs": info.crs_label,
        "georeferenced": info.georeferenced,
        "transform": list(info.transform)[:6],
        "nodata": info.nodata,
        "mask": masks[0] if len(set(masks)) == 1 else masks,
        "block": list(blocks),
        "overviews": overviews,
        "tiles_512_overlap_128": len(grid),
        "notices": list(info.notices),
    }


def _print_tree(data: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{pad}{key}:")
            _print_tree(value, indent + 1)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{pad}{key}:")
            for item in value:
                print(f"{pad}  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{pad}{key}: {value}")


def _create_model(args: argparse.Namespace) -> int:
    from .bundle import create_bundle, save_bundle
    from .card import ClassInfo, ClickEncoding, InputSpec, ModelCard, Normalization

    names = [n.strip() for n in args.classes.split(",") if n.strip()]
    if len(names) < 2:
        raise UserError("--classes needs at least two class names")
    palette = [
        "#e41a1c",
        "#377eb8",
        "#4daf4a",
        "#984ea3",
        "#ff7f00",
        "#ffff33",
        "#a65628",
        "#f781bf",
        "#999999",
    ]
    classes = []
    for i, entry in enumerate(names):
        name, _, color = entry.partition(":")
        classes.append(ClassInfo(i, name, color or palette[i % len(palette)]))
    try:
        bands = tuple(int(b) for b in args.bands.split(","))
    except ValueError:
        raise UserError(f"--bands must be comma-separated band numbers, not '{args.bands}'") from None
    n = len(bands)
    card = ModelCard(
        name=args.name or args.out.name,
        classes=tuple(classes),
        architecture=args.architecture,
        encoder=args.encoder,
        input=InputSpec(
            bands=bands,
            band_names=tuple(f"band {b}" for b in bands),
            normalization=Normalization(min=(0.0,) * n, max=(255.0,) * n, mean=(0.5,) * n, std=(0.25,) * n),
        ),
        clicks=ClickEncoding(enabled=not args.no_clicks),
        provenance={"training": "none: freshly initialised", "seed": args.seed},
    )
    ModelCard.from_json(card.to_json())  # the same validation a reader applies
    bundle = create_bundle(card, seed=args.seed)
    target = save_bundle(bundle, args.out, dtype=args.dtype)
    print(
        f"wrote {target} ({card.architecture}/{card.encoder}, "
        f"{card.in_channels} input channels, {card.n_classes} classes)"
    )
    return 0
