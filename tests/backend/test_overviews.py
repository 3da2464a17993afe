"""Overviews refreshed over changed windows equal GDAL's full rebuild, or are left to it."""

import shutil

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from backend.io.overviews import merged, refresh_overviews


def write_map(path, values, nodata, factors):
    profile = dict(
        driver="GTiff", width=values.shape[1], height=values.shape[0], count=1, dtype=values.dtype,
        nodata=nodata, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(values, 1)
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews(factors, RESAMPLING[values.dtype.kind])
    return path


RESAMPLING = {"u": Resampling.nearest, "f": Resampling.average}


def overviews(path):
    with rasterio.open(path) as dataset:
        count = len(dataset.overviews(1))
    levels = []
    for level in range(count):
        with rasterio.open(path, overview_level=level) as dataset:
            levels.append(dataset.read(1))
    return levels


def maps(rng, height, width):
    classes = rng.integers(0, 6, (height, width)).astype("uint8")
    uncertainty = rng.random((height, width)).astype("float32")
    uncertainty[:37, :301] = np.nan  # nodata across block and 2×2 boundaries
    return {"classes": (classes, 255), "uncertainty": (uncertainty, float("nan"))}


@pytest.mark.parametrize("name", ["classes", "uncertainty"])
@pytest.mark.parametrize("shape", [(2048, 2048), (2048, 1800)])  # 1800: 225 px, then 113 (ceil)
def test_a_refresh_over_the_changed_windows_equals_a_full_rebuild(tmp_path, name, shape):
    rng = np.random.default_rng(3)
    values, nodata = maps(rng, *shape)[name]
    path = write_map(tmp_path / "map.tif", values, nodata, [2, 4, 8, 16])
    height, width = shape
    rects = [(101, 203, 613, 715), (300, 500, 812, 1012), (height - 48, width - 48, height, width)]
    changed = values.copy()
    for row0, col0, row1, col1 in rects:
        patch = maps(rng, row1 - row0, col1 - col0)[name][0]
        patch[5:9, 7:40] = nodata  # new nodata inside a window
        changed[row0:row1, col0:col1] = patch
    before = overviews(path)
    with rasterio.open(path, "r+") as dataset:
        dataset.write(changed, 1)
    assert refresh_overviews(path, rects, RESAMPLING[values.dtype.kind])

    expected = shutil.copy(path, tmp_path / "expected.tif")
    with rasterio.open(expected, "r+") as dataset:
        dataset.build_overviews([2, 4, 8, 16], RESAMPLING[values.dtype.kind])
    for got, want, old in zip(overviews(path), overviews(expected), before, strict=True):
        np.testing.assert_array_equal(got, want)  # bit for bit, NaN where NaN
        assert not np.array_equal(got, old, equal_nan=True)


def test_a_first_level_that_does_not_halve_exactly_is_left_to_a_full_rebuild(tmp_path):
    values, nodata = maps(np.random.default_rng(4), 1001, 1536)["uncertainty"]
    path = write_map(tmp_path / "odd.tif", values, nodata, [2, 4])
    before = path.read_bytes()
    assert not refresh_overviews(path, [(0, 0, 100, 100)], Resampling.average)
    assert path.read_bytes() == before


def test_large_windows_and_other_resamplings_are_left_to_a_full_rebuild(tmp_path):
    values, nodata = maps(np.random.default_rng(5), 1024, 1024)["uncertainty"]
    path = write_map(tmp_path / "map.tif", values, nodata, [2, 4])
    before = path.read_bytes()
    assert not refresh_overviews(path, [(0, 0, 600, 600)], Resampling.average)  # 34 % of it
    assert not refresh_overviews(path, [(0, 0, 100, 100)], Resampling.bilinear)
    assert path.read_bytes() == before
    assert refresh_overviews(path, [(0, 0, 500, 500)], Resampling.average)  # 24 %


def test_overlapping_windows_merge_and_distant_ones_stay_apart():
    tiles = [(0, 0, 512, 512), (0, 384, 512, 896), (384, 0, 896, 512), (384, 384, 896, 896)]
    assert merged(tiles) == [(0, 0, 896, 896)]
    assert sorted(merged([(0, 0, 10, 10), (500, 500, 510, 510)])) == [(0, 0, 10, 10), (500, 500, 510, 510)]
