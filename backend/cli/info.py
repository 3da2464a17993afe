"""``info MODEL_DIR|RASTER [--json]``: what a model bundle or a raster holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError

NAME = "info"
HELP = "describe a model bundle or a raster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a model bundle folder or a raster")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ..model.bundle import CARD_FILE

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
    from ..model.bundle import load_bundle

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

    from ..io.raster import inspect_raster
    from ..io.tiling import TileGrid

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
