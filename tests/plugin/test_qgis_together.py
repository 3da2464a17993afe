"""PyQGIS, torch and the engine in one interpreter (the plugin runs the engine in-process)."""

import numpy as np
import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer

from backend.predict.job import PredictParameters, run_predict
from tests.helpers import random_image, write_raster


def test_qgis_torch_and_the_engine_work_in_one_interpreter(qgis_app, tmp_path, fast_model):
    import torch

    import backend

    assert Qgis.QGIS_VERSION_INT >= 32200
    assert torch.ones(2).sum().item() == 2.0
    assert backend.__version__

    raster = write_raster(tmp_path / "scene.tif", random_image(200, 260, seed=2))
    report = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=fast_model))

    classes = QgsRasterLayer(str(report.classes), "classes")
    heatmap = QgsRasterLayer(str(report.uncertainty), "uncertainty")
    patches = QgsVectorLayer(f"{report.patches}|layername=patches", "patches", "ogr")
    assert classes.isValid() and heatmap.isValid() and patches.isValid()
    QgsProject.instance().addMapLayers([classes, heatmap, patches])
    assert classes.crs().authid() == "EPSG:32640" == patches.crs().authid()
    assert classes.extent() == QgsRasterLayer(str(raster), "input").extent()
    assert patches.featureCount() == report.run["patches_ranked"]
    QgsProject.instance().removeAllMapLayers()


def test_qgis_picks_up_the_engines_style_sidecars(qgis_app, tmp_path, fast_model):
    """Opened by hand, the maps show the model's classes and a translucent heatmap."""
    raster = write_raster(tmp_path / "scene.tif", random_image(100, 120, seed=3))
    report = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=fast_model))
    classes = QgsRasterLayer(str(report.classes), "classes")
    renderer = classes.renderer()
    assert renderer.type() == "paletted"
    assert [c.label for c in renderer.classes()] == ["building", "land", "road", "vegetation", "water"]
    assert renderer.classes()[0].color.name() == "#3c1098"
    heatmap = QgsRasterLayer(str(report.uncertainty), "uncertainty")
    assert heatmap.renderer().type() == "singlebandpseudocolor"
    assert heatmap.renderer().opacity() == pytest.approx(0.6)
    items = heatmap.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert [round(i.value, 3) for i in (items[0], items[-1])] == [0.0, 1.0]


def test_a_raster_without_crs_lines_up_with_its_outputs_in_qgis(qgis_app, tmp_path, fast_model):
    """QGIS flips a raster without geotransform (y = −row); the outputs and patches must follow."""
    raster = write_raster(tmp_path / "plain.tif", random_image(300, 200), crs=None, transform=None)
    report = run_predict(
        PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=fast_model, patch_size=100)
    )
    source_extent = QgsRasterLayer(str(raster), "input").extent()
    assert source_extent.yMaximum() == 0 and source_extent.yMinimum() == -300
    assert QgsRasterLayer(str(report.classes), "classes").extent() == source_extent
    patches = QgsVectorLayer(f"{report.patches}|layername=patches", "patches", "ogr")
    assert patches.extent() == source_extent
    np.testing.assert_equal(patches.featureCount(), 6)


def test_the_plugin_loads_registers_its_provider_and_unloads(qgis_app, qgis_iface):
    from qgis.core import QgsApplication

    from sial_qgis_plugin import classFactory

    plugin = classFactory(qgis_iface)
    plugin.initGui()
    assert plugin.missing == []
    assert plugin.action is not None and plugin.action.objectName() == "sialOpenPanel"
    assert QgsApplication.processingRegistry().providerById("sial") is not None
    assert plugin.dock is not None and plugin.dock.objectName() == "SialSegmentationDock"
    plugin.unload()
    assert plugin.action is None and QgsApplication.processingRegistry().providerById("sial") is None
