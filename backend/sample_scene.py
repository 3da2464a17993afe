"""A synthetic but plausible land-cover scene, generated in code, for the demo and tests.

The project may not ship the shared imagery, so the built-in example is drawn here: sandy land,
a lake, vegetation patches, a road grid and buildings with shadows, on a UTM grid near Dubai at
0.5 m, with a masked (nodata) corner — plus its labels in the Dubai classes
(building, land, road, vegetation, water).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

BUILDING, LAND, ROAD, VEGETATION, WATER = range(5)
CLASS_NAMES = ("building", "land", "road", "vegetation", "water")
LABEL_NODATA = 255
SCENE_CRS = "EPSG:32640"  # WGS 84 / UTM zone 40N (Dubai)
ORIGIN = (300_000.0, 2_780_000.0)
PIXEL = 0.5


@dataclass(frozen=True)
class SampleScene:
    image: Path
    labels: Path


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-9)


def draw_scene(size: int = 1536, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB uint8 3 × H × W, labels uint8 H × W, valid bool H × W)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    labels = np.full(shape, LAND, dtype=np.uint8)
    water = _noise(rng, shape, size / 10) > 1.3
    vegetation = (_noise(rng, shape, size / 60) > 0.9) & ~water
    labels[vegetation] = VEGETATION
    labels[water] = WATER

    roads = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    for position in rng.choice(np.arange(size // 8, size - size // 8), size=3, replace=False):
        half = rng.integers(6, 11)
        roads |= np.abs(yy - position) < half
        roads |= np.abs(xx - (size - position)) < half
    diagonal = np.abs((yy - xx) - rng.integers(-size // 4, size // 4)) < 9
    roads |= diagonal
    roads &= ~water
    labels[roads] = ROAD

    shadows = np.zeros(shape, dtype=bool)
    roofs = np.zeros((3, *shape), dtype=np.float32)
    free = labels == LAND
    for _ in range(size * size // 9000):
        h, w = rng.integers(18, 70, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        if not free[r : r + h, c : c + w].all():
            continue
        labels[r : r + h, c : c + w] = BUILDING
        free[max(r - 6, 0) : r + h + 6, max(c - 6, 0) : c + w + 6] = False
        colour = rng.choice([[205, 205, 200], [235, 232, 225], [170, 95, 70], [150, 150, 160]])
        roofs[:, r : r + h, c : c + w] = np.asarray(colour, dtype=np.float32)[:, None, None]
        shadow = (slice(r + h, min(r + h + 8, size)), slice(c + 4, min(c + w + 4, size)))
        shadows[shadow] = labels[shadow] == LAND

    base = {
        LAND: (196, 176, 146),
        ROAD: (118, 118, 124),
        VEGETATION: (72, 108, 52),
        WATER: (38, 88, 124),
    }
    image = np.zeros((3, *shape), dtype=np.float32)
    texture = 14 * _noise(rng, shape, 2) + 10 * _noise(rng, shape, 12)
    for cls, colour in base.items():
        mask = labels == cls
        image[:, mask] = np.asarray(colour, dtype=np.float32)[:, None]
    building = labels == BUILDING
    image[:, building] = roofs[:, building]
    image += texture[None] * np.where(labels == WATER, 0.3, 1.0)[None]
    image[:, shadows] *= 0.55
    image += rng.normal(0, 3, image.shape).astype(np.float32)

    valid = (yy + xx) < int(1.75 * size)  # a masked corner, as at the edge of a real mosaic
    labels[~valid] = LABEL_NODATA
    image[:, ~valid] = 0
    return np.clip(image, 0, 255).astype(np.uint8), labels, valid


def write_scene(directory: str | Path, size: int = 1536, seed: int = 7) -> SampleScene:
    """Write ``sample_image.tif`` (RGB, internal mask) and ``sample_labels.tif`` (nodata 255)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image, labels, valid = draw_scene(size, seed)
    transform = Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])
    common = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs=CRS.from_string(SCENE_CRS),
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    scene = SampleScene(directory / "sample_image.tif", directory / "sample_labels.tif")
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(scene.image, "w", count=3, dtype="uint8", photometric="RGB", **common) as dst,
    ):
        dst.write(image)
        dst.write_mask(valid.astype(np.uint8) * 255)
    with rasterio.open(scene.labels, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **common) as dst:
        dst.write(labels, 1)
    return scene
