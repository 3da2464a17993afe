import numpy as np
import pytest

from backend.errors import UserError
from backend.io.raster import QGIS_PIXEL_TRANSFORM, RasterSource, inspect_raster
from backend.model.card import InputSpec, Normalization
from tests.helpers import UTM, random_image, write_raster

RGB = InputSpec()


def test_uint8_fixed_range_normalisation(tmp_path):
    data = np.zeros((3, 40, 50), dtype=np.uint8)
    data[:, :, 25:] = 255
    source = RasterSource(write_raster(tmp_path / "a.tif", data), RGB)
    image, valid = source.read_normalized(0, 0, 40, 50)
    assert valid.all()
    # (v/255 - 0.5) / 0.25: 0 → -2, 255 → +2
    np.testing.assert_allclose(image[:, :, :25], -2.0, atol=1e-6)
    np.testing.assert_allclose(image[:, :, 25:], 2.0, atol=1e-6)


def test_uint16_is_stretched_by_percentiles_with_a_notice(tmp_path):
    data = random_image(64, 64, dtype="uint16")
    source = RasterSource(write_raster(tmp_path / "a.tif", data), RGB)
    assert any("percentile" in n for n in source.scaling.notices)
    image, _ = source.read_normalized(0, 0, 64, 64)
    raw01 = image * 0.25 + 0.5  # undo mean/std: the stretch maps p2..p98 to 0..1
    assert -0.1 < raw01.min() < 0.02 and 0.98 < raw01.max() < 1.1
    assert np.median(raw01) == pytest.approx(0.5, abs=0.05)


def test_float_raster_with_a_fixed_float_card_uses_the_fixed_range(tmp_path):
    spec = InputSpec(dtype="float32", normalization=Normalization(max=(1.0, 1.0, 1.0)))
    data = random_image(32, 32, dtype="float32")
    source = RasterSource(write_raster(tmp_path / "f.tif", data), spec)
    image, _ = source.read_normalized(0, 0, 32, 32)
    np.testing.assert_allclose(image, (data - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    assert not source.scaling.notices


def test_nodata_value_internal_mask_and_alpha_are_all_respected(tmp_path):
    data = random_image(32, 32)
    data[:, :4, :] = 0
    nodata = RasterSource(write_raster(tmp_path / "nodata.tif", data, nodata=0), RGB)
    assert not nodata.read_raw(0, 0, 32, 32)[1][:4].any()

    mask = np.ones((32, 32), dtype=bool)
    mask[:, -5:] = False
    masked = RasterSource(write_raster(tmp_path / "mask.tif", random_image(32, 32), mask=mask), RGB)
    np.testing.assert_array_equal(masked.read_raw(0, 0, 32, 32)[1], mask)

    rgba = np.concatenate([random_image(32, 32), (mask * 255).astype(np.uint8)[None]])
    alpha = RasterSource(write_raster(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES"), RGB)
    np.testing.assert_array_equal(alpha.read_raw(0, 0, 32, 32)[1], mask)


def test_invalid_pixels_are_zero_in_the_network_input(tmp_path):
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:, 4:] = True
    source = RasterSource(write_raster(tmp_path / "m.tif", random_image(16, 16), mask=mask), RGB)
    image, valid = source.read_normalized(0, 0, 16, 16)
    assert (image[:, ~valid] == 0).all()


def test_windows_past_the_edge_are_padded_and_invalid(tmp_path):
    source = RasterSource(write_raster(tmp_path / "s.tif", random_image(20, 30)), RGB)
    image, valid = source.read_raw(0, 0, 64, 64)
    assert image.shape == (3, 64, 64)
    assert valid[:20, :30].all() and not valid[20:].any() and not valid[:, 30:].any()


def test_raster_without_crs_uses_qgis_pixel_convention(tmp_path):
    info = inspect_raster(write_raster(tmp_path / "n.tif", random_image(10, 10), crs=None, transform=None))
    assert info.crs is None and not info.georeferenced
    assert info.map_transform == QGIS_PIXEL_TRANSFORM
    assert any("no coordinate reference system" in n for n in info.notices)
    georef = inspect_raster(write_raster(tmp_path / "g.tif", random_image(10, 10)))
    assert georef.georeferenced and georef.map_transform == UTM and georef.crs_label == "EPSG:32640"


def test_all_nodata_raster_is_detected(tmp_path):
    source = RasterSource(write_raster(tmp_path / "e.tif", np.zeros((3, 50, 50), np.uint8), nodata=0), RGB)
    assert not source.has_valid_pixels()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text("hello, I am text"), "not a raster GDAL can read"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "not found"),
    ],
)
def test_unusable_files_give_one_clear_error(tmp_path, make, message):
    path = tmp_path / "input.tif"
    make(path)
    with pytest.raises(UserError, match=message):
        inspect_raster(path)


def test_too_few_bands_for_the_model(tmp_path):
    path = write_raster(tmp_path / "one.tif", random_image(10, 10, bands=1))
    with pytest.raises(UserError, match=r"has 1 band\(s\) but the model reads bands 1, 2, 3"):
        RasterSource(path, RGB)


def test_a_raster_held_in_memory_reads_like_the_file(tmp_path):
    from backend.io.raster import MemoryRasterSource

    mask = np.ones((40, 50), dtype=bool)
    mask[:5] = False
    path = write_raster(tmp_path / "m.tif", random_image(40, 50, seed=3), mask=mask)
    on_disk, in_memory = RasterSource(path, RGB), MemoryRasterSource(path, RGB)
    for window in ((0, 0, 40, 50), (30, 40, 32, 32), (-5, -5, 20, 20)):
        a, b = on_disk.read_normalized(*window), in_memory.read_normalized(*window)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(on_disk.read_valid(0, 0, 40, 50), in_memory.read_valid(0, 0, 40, 50))


def test_a_stored_identity_geotransform_is_kept_as_qgis_keeps_it(tmp_path):
    """rasterio writes Affine.identity() into the file; QGIS then draws the raster at y = 0…+height
    (not upright at y = −height…0), so the engine must place clicks and outputs there too."""
    from affine import Affine

    stored = inspect_raster(
        write_raster(tmp_path / "i.tif", random_image(10, 10), crs=None, transform=Affine.identity())
    )
    assert stored.georeferenced and stored.map_transform == Affine.identity()
    assert any("keep its geotransform" in n for n in stored.notices)
    shifted = Affine(2.0, 0.0, 10.0, 0.0, 2.0, 5.0)
    other = inspect_raster(
        write_raster(tmp_path / "s.tif", random_image(10, 10), crs=None, transform=shifted)
    )
    assert other.georeferenced and other.map_transform == shifted


def test_a_raster_placed_by_ground_control_points_only_is_refused(tmp_path):
    import rasterio
    from rasterio.control import GroundControlPoint

    path = write_raster(tmp_path / "g.tif", random_image(10, 10), crs=None, transform=None)
    with rasterio.open(path, "r+") as dataset:
        corners = ((0, 0, 300_000, 2_780_000), (10, 10, 300_005, 2_779_995), (0, 10, 300_005, 2_780_000))
        points = [GroundControlPoint(*corner) for corner in corners]
        dataset.gcps = (points, rasterio.crs.CRS.from_epsg(32640))
    with pytest.raises(UserError, match="ground control points only: warp it"):
        inspect_raster(path)
