import numpy as np
import pytest

from backend.errors import UserError
from backend.io.tiling import TileGrid, blend_weights, context_window, patch_grid, tile_offsets


def coverage(grid: TileGrid) -> np.ndarray:
    counts = np.zeros((grid.height, grid.width), dtype=int)
    for t in grid.tiles:
        counts[t.row : t.row + t.size, t.col : t.col + t.size] += 1
    return counts


def test_offsets_run_edge_to_edge_evenly_with_at_least_the_overlap():
    offsets = tile_offsets(6000, 512, 128)
    assert offsets[0] == 0 and offsets[-1] == 6000 - 512 and len(offsets) == 16
    gaps = np.diff(offsets)
    assert gaps.max() <= 512 - 128 and gaps.max() - gaps.min() <= 1
    assert tile_offsets(1000, 512, 128) == [0, 244, 488]
    assert tile_offsets(896, 512, 128) == [0, 384]
    assert tile_offsets(512, 512, 128) == [0]
    assert tile_offsets(300, 512, 128) == [0]


@pytest.mark.parametrize("width,height", [(6000, 6000), (1000, 777), (513, 512), (1528, 1632)])
def test_grid_covers_every_pixel_with_whole_tiles_inside_the_raster(width, height):
    grid = TileGrid(width, height, 512, 128)
    assert coverage(grid).min() >= 1
    assert all(t.row + t.size <= height and t.col + t.size <= width for t in grid.tiles)
    assert [t.index for t in grid.tiles] == list(range(len(grid)))


def test_6000_square_raster_is_256_tiles():
    assert len(TileGrid(6000, 6000)) == 256


def test_raster_smaller_than_a_tile_gets_one_padded_tile():
    grid = TileGrid(300, 200, 512, 128)
    assert [(t.row, t.col, t.size) for t in grid.tiles] == [(0, 0, 512)]


def test_tile_size_and_overlap_are_validated():
    with pytest.raises(UserError, match="multiple of 32"):
        TileGrid(1000, 1000, 500, 100)
    with pytest.raises(UserError, match="overlap"):
        TileGrid(1000, 1000, 256, 256)


@pytest.mark.parametrize("width,height", [(6000, 6000), (6447, 4438), (12000, 12000)])
def test_a_click_touches_at_most_four_tiles_with_the_default_grid(width, height):
    grid = TileGrid(width, height)
    assert coverage(grid).max() <= 4
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.integers(0, height, 2000), rng.integers(0, width, 2000)])
    edges = [(height - 15, width - 15), (height - 30, 7), (5, width - 20)]
    counts = [len(grid.tiles_within_distance(r, c, 10)) for r, c in [*points, *edges]]
    assert max(counts) <= 4 and min(counts) >= 1
    # A click in the middle of an overlap corner touches exactly four.
    corner = grid.tiles[len(grid.col_offsets) + 1]
    assert len(grid.tiles_within_distance(corner.row + 20, corner.col + 20, 10)) == 4


def test_blend_weights_are_smooth_positive_symmetric_and_flat_inside():
    w = blend_weights(512, 128)
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert (w[128:384, 128:384] == 1).all()
    profile = w[256]
    assert (np.diff(profile[:129]) >= 0).all()  # rises monotonically over the overlap
    assert np.abs(np.diff(profile)).max() < 0.02  # no jumps: no seams


def test_blending_a_constant_field_returns_the_constant():
    """Normalised weighted averaging cannot invent values (seams would show as fake uncertainty)."""
    grid = TileGrid(1000, 900, 256, 64)
    total = np.zeros((900, 1000))
    weight = np.zeros((900, 1000))
    for t in grid.tiles:
        total[t.row : t.row + 256, t.col : t.col + 256] += 0.37 * grid.weights
        weight[t.row : t.row + 256, t.col : t.col + 256] += grid.weights
    np.testing.assert_allclose(total / weight, 0.37, rtol=1e-6)


def test_patches_partition_the_raster():
    patches = patch_grid(1100, 700, 512)
    assert len(patches) == 3 * 2
    area = sum(p.width * p.height for p in patches)
    assert area == 1100 * 700
    assert patches[-1].width == 1100 - 1024 and patches[-1].height == 700 - 512


@pytest.mark.parametrize(
    ("region", "height", "width", "expected"),
    [
        ((512, 512, 1536, 1536), 2048, 2048, (384, 384, 1280, 1280)),  # the dock's 1024² extent
        ((0, 0, 100, 100), 384, 384, (0, 0, 256, 256)),  # at the raster's corner: no context past it
        ((300, 1900, 400, 2048), 2048, 2048, (172, 1760, 384, 288)),  # grown back into the raster
        ((0, 0, 50, 70), 50, 70, (0, 0, 64, 96)),  # a raster smaller than the stride: padded past it
    ],
)
def test_a_context_window_holds_its_region_and_margin_in_network_strides(region, height, width, expected):
    window = context_window(region, 128, height, width)
    assert (window.row, window.col, window.height, window.width) == expected
    assert window.height % 32 == 0 and window.width % 32 == 0
    assert window.row <= region[0] and window.col <= region[1]
    assert window.row + window.height >= region[2] and window.col + window.width >= region[3]
