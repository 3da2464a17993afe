"""Outputs, clicks and patches lie exactly where QGIS draws the input, for every way a raster can
be placed: a CRS, no geotransform at all, or a stored geotransform without a CRS (the identity,
common for drone frames and scans, which QGIS draws at y = 0 … +height)."""

import pytest
from affine import Affine
from qgis.core import QgsPointXY, QgsProject, QgsRasterLayer

from tests.helpers import UTM, random_image, write_raster
from tests.plugin.conftest import wait_until_idle

PLACEMENTS = {
    "crs": ("EPSG:32640", UTM),
    "nothing": (None, None),
    "identity": (None, Affine.identity()),
    "south-up": (None, Affine(2.0, 0.0, 10.0, 0.0, 2.0, 5.0)),
}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_outputs_and_clicks_line_up_with_the_image(
    qgis_canvas, controller, small_tile_model, tmp_path, placement
):
    crs, transform = PLACEMENTS[placement]
    path = write_raster(tmp_path / "r.tif", random_image(200, 260, seed=8), crs=crs, transform=transform)
    layer = QgsRasterLayer(str(path), "r")
    QgsProject.instance().addMapLayer(layer)
    qgis_canvas.setDestinationCrs(layer.crs())
    qgis_canvas.setExtent(layer.extent())
    assert controller.start(layer, small_tile_model, "cpu", tmp_path / "s.gpkg")
    wait_until_idle(controller)
    layers = controller.layers
    for output in (layers.classes, layers.uncertainty):
        assert output.extent() == layer.extent(), placement
    assert layers.patches.extent().contains(layer.extent().center())
    # a click at the centre of pixel (row 30, col 40), in map coordinates of the drawn image
    extent = layer.extent()
    width, height = extent.width() / layer.width(), extent.height() / layer.height()
    flipped = transform is not None and transform.e > 0  # QGIS draws row 0 at the bottom then
    y = extent.yMinimum() + 30.5 * height if flipped else extent.yMaximum() - 30.5 * height
    point = QgsPointXY(extent.xMinimum() + 40.5 * width, y)
    assert controller.add_click(point, qgis_canvas.mapSettings().destinationCrs()), controller.messages
    wait_until_idle(controller)
    [click] = controller.session.clicks()
    assert (click.row, click.col) == (30, 40)


@pytest.fixture(scope="module")
def metre_model(tmp_path_factory):
    """The small-tile test network, its card saying it was trained on 1-m imagery."""
    from dataclasses import replace

    from backend.model.bundle import save_bundle
    from tests.helpers import make_bundle

    directory = tmp_path_factory.mktemp("models") / "one-metre"
    bundle = make_bundle(directory, tile=128, overlap=32)
    card = bundle.card.with_updates(input=replace(bundle.card.input, gsd_m=1.0))
    save_bundle(replace(bundle, card=card), directory, dtype="float32")
    return directory


def test_a_raster_without_a_crs_given_its_pixel_size_is_read_at_the_model_gsd(
    qgis_canvas, controller, metre_model, tmp_path
):
    """The dock's Pixel size field: the session reads the raster resampled to the model's 1 m
    (the same path as the CLI's --pixel-size), and the maps and clicks stay on the raster's grid."""
    import json

    path = write_raster(tmp_path / "r.tif", random_image(200, 260, seed=8), crs=None, transform=None)
    layer = QgsRasterLayer(str(path), "r")
    QgsProject.instance().addMapLayer(layer)
    qgis_canvas.setExtent(layer.extent())
    controller.pixel_size = 0.5
    assert controller.start(layer, metre_model, "cpu", tmp_path / "s.gpkg")
    wait_until_idle(controller)
    assert controller.session.pixel_size == 0.5
    run = json.loads((controller.session.outputs / "run.json").read_text())
    assert run["model_grid"] == {"width": 130, "height": 100, "factor": 0.5}
    for output in (controller.layers.classes, controller.layers.uncertainty):
        assert output.extent() == layer.extent() and output.width() == 260 and output.height() == 200
    extent = layer.extent()
    point = QgsPointXY(extent.xMinimum() + 40.5, extent.yMaximum() - 30.5)
    assert controller.add_click(point, qgis_canvas.mapSettings().destinationCrs()), controller.messages
    wait_until_idle(controller)
    [click] = controller.session.clicks()
    assert (click.row, click.col) == (30, 40)  # stored on the raster's pixels
