"""A synthetic but plausible land-cover scene, generated in code, for the demo and tests.

The project may not ship the shared imagery, so the built-in example is drawn here: a coast and
a lake, pale desert crossed by sand tracks and a highway, and a town of street blocks with
gardens and flat-roofed buildings casting shadows, on a UTM grid near Dubai at 1 m (the bundled
models' GSD), with a masked (nodata) corner — plus its labels in the Dubai classes (building,
land, road, vegetation, water). Colours and texture strengths were set from the Dubai training
tiles' per-class statistics, so the bundled model recognises most of it (58 % mIoU without
clicks, measured with ``dubai-landcover``) and the demo's clicks have real errors to fix.
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
PIXEL = 1.0  # the bundled models' gsd_m: the scene is drawn at the scale they were trained at
STREET, TRACK, HIGHWAY = 1, 2, 3  # road surfaces, each drawn in its own colour
Building = tuple[int, int, int, int]  # row, col, height, width
ROOF_COLOURS = ((245, 243, 245), (200, 196, 204), (150, 146, 156), (176, 150, 135), (120, 118, 126))


@dataclass(frozen=True)
class SampleScene:
    image: Path
    labels: Path


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit variance. Wide fields are smoothed
    on a coarser grid and interpolated up, which looks the same and is far faster."""
    factor = max(1, int(sigma // 4))
    coarse = (-(-shape[0] // factor) + 3, -(-shape[1] // factor) + 3)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / factor)
    if factor > 1:
        field = ndimage.zoom(field, factor, order=3)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-9)


def _lay_out(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, the urban district and the road surface (0, STREET, TRACK or HIGHWAY)."""
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.full(shape, LAND, dtype=np.uint8)
    coast = xx + 0.35 * yy + 0.06 * size * _noise(rng, shape, size / 12)
    water = (coast < 0.16 * size) | (_noise(rng, shape, size / 10) > 1.7)
    district = _noise(rng, shape, size / 5)
    urban = (district > np.quantile(district, 0.45)) & ~water

    surface = np.zeros(shape, dtype=np.uint8)
    across = (yy - xx) - rng.integers(-size // 6, size // 6)
    surface[np.abs(across) < 0.025 * size] = HIGHWAY
    surface[np.abs(across) < 3] = STREET  # the central reservation
    step = int(np.clip(size // 3, 110, 250))  # city blocks of 55 to 125 m
    for offset in range(step // 2, size, step):
        half = rng.integers(5, 8)
        street = (np.abs(yy - offset) < half) | (np.abs(xx - offset - step // 3) < half)
        surface[street & urban] = STREET
    for _ in range(4):  # winding sand tracks through the desert
        track = np.abs(_noise(rng, shape, size / 7)) < 0.03
        surface[track & ~urban & (surface == 0)] = TRACK
    surface[water] = 0
    labels[surface > 0] = ROAD

    near_road = ndimage.binary_dilation(np.isin(surface, (STREET, HIGHWAY)), iterations=8)
    gardens = urban & (_noise(rng, shape, size / 40) > 0.3) & (labels == LAND) & ~near_road
    farms = ~urban & (_noise(rng, shape, size / 25) > 1.6) & (labels == LAND)
    labels[gardens | farms] = VEGETATION
    labels[water] = WATER
    return labels, urban, surface


def _place_buildings(
    rng: np.random.Generator, labels: np.ndarray, urban: np.ndarray, largest: int
) -> list[Building]:
    """Rectangular buildings, packed in the urban district and scattered elsewhere, apart from
    roads, water and each other."""
    size = labels.shape[0]
    free = (labels == LAND) | (labels == VEGETATION)
    free &= ~ndimage.binary_dilation(labels == ROAD, iterations=4)
    placed = []
    for _ in range(size * size // 600):
        h, w = rng.integers(20, largest, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        if not urban[r + h // 2, c + w // 2] and rng.random() > 0.08:
            continue
        if not free[r : r + h, c : c + w].all():
            continue
        labels[r : r + h, c : c + w] = BUILDING
        free[max(r - 5, 0) : r + h + 5, max(c - 5, 0) : c + w + 5] = False
        placed.append((r, c, h, w))
    return placed


def draw_scene(size: int = 1536, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB uint8 3 × H × W, labels uint8 H × W, valid bool H × W). The colours follow the Dubai
    tiles: pale bluish sand, near-black green water, dark vegetation, grey asphalt, bright roofs."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    labels, urban, surface = _lay_out(rng, size)
    buildings = _place_buildings(rng, labels, urban, largest=int(np.clip(size // 6, 40, 90)))

    base = {
        LAND: (190, 187, 197),
        ROAD: (104, 100, 110),
        VEGETATION: (78, 98, 56),
        WATER: (20, 38, 28),
    }
    image = np.zeros((3, *shape), dtype=np.float32)
    for cls, colour in base.items():
        image[:, labels == cls] = np.asarray(colour, dtype=np.float32)[:, None]
    image[:, surface == TRACK] = np.asarray((150, 145, 156), dtype=np.float32)[:, None]
    image[:, surface == HIGHWAY] = np.asarray((66, 62, 70), dtype=np.float32)[:, None]
    strength = {LAND: 1.0, ROAD: 0.6, VEGETATION: 1.3, WATER: 0.15}
    weight = np.zeros(shape, dtype=np.float32)
    for cls, value in strength.items():
        weight[labels == cls] = value
    texture = 16 * _noise(rng, shape, size / 20) + 9 * _noise(rng, shape, 4) + 6 * _noise(rng, shape, 1)
    image += (texture * weight)[None]
    canopy = np.clip(_noise(rng, shape, 2.0), -3, 3) * 24
    image[:, labels == VEGETATION] += canopy[labels == VEGETATION][None]
    _paint_buildings(rng, image, labels, buildings)
    image += rng.normal(0, 3, image.shape).astype(np.float32)

    yy, xx = np.mgrid[0:size, 0:size]
    valid = (yy + xx) < int(1.75 * size)  # a masked corner, as at the edge of a real mosaic
    labels[~valid] = LABEL_NODATA
    image[:, ~valid] = 0
    return np.clip(image, 0, 255).astype(np.uint8), labels, valid


def _paint_buildings(
    rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, buildings: list[Building]
) -> None:
    """Roofs (shaded half, parapets, roof-top plant, fine texture) and the shadows they cast."""
    size = labels.shape[0]
    shadows = np.zeros(labels.shape, dtype=bool)
    for r, c, h, w in buildings:
        roof = rng.choice(ROOF_COLOURS)
        image[:, r : r + h, c : c + w] = np.asarray(roof, dtype=np.float32)[:, None, None]
        image[:, r : r + h, c + w // 2 : c + w] *= 0.82  # the roof's shaded half
        image[:, r : r + h, c : c + w][:, [0, -1]] *= 0.6  # parapets
        image[:, r : r + h, c : c + w][:, :, [0, -1]] *= 0.6
        for _ in range(rng.integers(3, 9)):  # roof-top plant and courtyards, darker or brighter
            ph, pw = rng.integers(3, max(4, h // 3)), rng.integers(3, max(4, w // 3))
            pr, pc = r + rng.integers(1, h - ph), c + rng.integers(1, w - pw)
            image[:, pr : pr + ph, pc : pc + pw] *= rng.choice([0.45, 0.7, 1.15])
        shadow = (slice(r + h, min(r + h + 10, size)), slice(c + 4, min(c + w + 6, size)))
        shadows[shadow] = labels[shadow] != BUILDING
    image[:, shadows] *= 0.4
    roofs = labels == BUILDING
    image[:, roofs] += 30 * _noise(rng, labels.shape, 1.5)[roofs][None]


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
