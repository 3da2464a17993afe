"""What the analyst meets when something is off: one clear message, nothing broken."""

from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer

from tests.helpers import random_image, write_raster
from tests.plugin.conftest import wait_until_idle


def test_no_raster_selected(controller, small_tile_model):
    assert not controller.start(None, small_tile_model, "cpu")
    assert controller.messages == ["Choose a raster layer first."]
    assert controller.session is None


def test_a_model_whose_bands_do_not_match_the_raster(controller, small_tile_model, tmp_path):
    gray = QgsRasterLayer(str(write_raster(tmp_path / "gray.tif", random_image(100, 100, bands=1))), "gray")
    QgsProject.instance().addMapLayer(gray)
    assert controller.start(gray, small_tile_model, "cpu", tmp_path / "s.gpkg")  # checked in the background
    wait_until_idle(controller)
    assert "has 1 band(s) but the model reads bands 1, 2, 3" in controller.messages[-1]
    assert controller.messages[-1].endswith("No session was created.")
    assert controller.session is None and list(tmp_path.iterdir()) == [tmp_path / "gray.tif"]


def test_a_raster_without_crs_works_in_pixel_coordinates(qgis_canvas, controller, small_tile_model, tmp_path):
    from qgis.core import QgsPointXY

    path = write_raster(tmp_path / "plain.tif", random_image(256, 256), crs=None, transform=None)
    plain = QgsRasterLayer(str(path), "plain")
    QgsProject.instance().addMapLayer(plain)
    qgis_canvas.setExtent(plain.extent())
    assert controller.start(plain, small_tile_model, "cpu", tmp_path / "p.gpkg")
    wait_until_idle(controller)
    assert any("no coordinate reference system" in m for m in controller.messages)
    assert controller.layers.classes.extent() == plain.extent()  # the outputs sit on the image
    controller.current_class = 2
    assert controller.add_click(QgsPointXY(30.5, -100.5), qgis_canvas.mapSettings().destinationCrs())
    wait_until_idle(controller)
    [click] = controller.session.clicks()
    assert (click.row, click.col) == (100, 30)


def test_missing_dependencies_show_the_install_dialog(qgis_iface, monkeypatch):
    import sial_qgis_plugin.plugin as plugin_module
    from sial_qgis_plugin import classFactory

    monkeypatch.setattr(plugin_module, "missing_packages", lambda: ["torch", "segmentation-models-pytorch"])
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    assert plugin.dock is None and plugin.provider is None  # nothing that needs torch is built
    dialog = plugin.show_dependencies()
    assert dialog.isVisible()
    assert "torch" in dialog.explanation.text() and "segmentation-models-pytorch" in dialog.explanation.text()
    dialog.cpu.setChecked(True)
    command = dialog.command()
    assert command[1:4] == ["-m", "pip", "install"] and "--target" in command
    assert "torch" in command and "https://download.pytorch.org/whl/cpu" in command
    constraints = command[command.index("--constraint") + 1]
    assert "torch==2.14.1\n" in Path(constraints).read_text(encoding="utf-8")  # every version pinned there
    assert any(part.startswith("numpy==") for part in command)  # QGIS's numpy is kept
    dialog.close()
    plugin.unload()


def test_the_adapted_model_exported_into_a_users_folder_lands_in_a_sub_folder(
    controller, raster_layer, small_tile_model, tmp_path
):
    from backend.model.bundle import load_bundle

    assert controller.start(raster_layer, small_tile_model, "cpu", tmp_path / "s.gpkg")
    wait_until_idle(controller)
    mine = tmp_path / "Documents"
    mine.mkdir()
    (mine / "thesis.odt").write_bytes(b"three years")
    written = controller.export_bundle(mine)  # what the dock's folder dialog hands over
    assert written == mine / "test-timm-mobilenetv3_small_minimal_100-adapted"
    assert load_bundle(written).card.name.endswith("-adapted")
    assert (mine / "thesis.odt").read_bytes() == b"three years"
    (mine / written.name).rename(mine / "kept")  # a folder of that name that is not a bundle now
    (mine / written.name).mkdir()
    (mine / written.name / "data.csv").write_text("1\n")
    assert controller.export_bundle(mine) is None
    assert "is not a model bundle: choose an empty or a new folder" in controller.messages[-1]


def test_a_session_another_process_writes_is_refused_with_a_reason(
    controller, scene, small_tile_model, tmp_path
):
    import subprocess
    import sys

    from backend.session.session import Session
    from tests.helpers import REPO

    path = tmp_path / "shared.gpkg"
    Session.create(path, scene.image, small_tile_model, "cpu").close()
    code = "from backend.session.session import Session; "
    code += f"s = Session.open({str(path)!r}, 'cpu'); print(1, flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"1"
        assert controller.open_session(path, "cpu")  # opened in the background
        wait_until_idle(controller)
        assert controller.session is None
        assert f"session shared.gpkg is busy: process {holder.pid}" in controller.messages[-1]
    finally:
        holder.kill()
        holder.wait()
    assert controller.open_session(path, "cpu")
    wait_until_idle(controller)
    assert controller.session is not None and controller.session.path == path


def test_a_damaged_checkpoint_is_said_when_the_session_is_reopened(
    controller, scene, small_tile_model, tmp_path
):
    from contextlib import closing

    from backend.learn.disca import DiscaSettings
    from backend.session.session import Session

    path = tmp_path / "damaged.gpkg"
    with closing(
        Session.create(path, scene.image, small_tile_model, "cpu", settings=DiscaSettings(steps=2))
    ) as session:
        session.add_click(30, 30, 1)
        session.retrain()
    (tmp_path / "damaged.checkpoints" / "round-0001.safetensors").write_bytes(b"not weights")
    assert controller.open_session(path, "cpu")
    wait_until_idle(controller)
    assert controller.messages[-1].startswith("Round 1's checkpoint round-0001.safetensors is damaged")
    assert "the model is the starting weights" in controller.messages[-1]
    assert controller.session.current.iteration == 0 and controller.session.iteration == 1


def test_a_long_prediction_is_announced_in_the_dock(controller, small_tile_model, tmp_path):
    path = write_raster(tmp_path / "wide.tif", random_image(800, 800, seed=3))
    layer = QgsRasterLayer(str(path), "wide")
    QgsProject.instance().addMapLayer(layer)
    assert controller.start(layer, small_tile_model, "cpu", tmp_path / "w.gpkg")
    wait_until_idle(controller)
    announced = [m for m in controller.messages if " tiles of 128 px on cpu; outputs about " in m]
    assert announced == [announced[0]] and announced[0].startswith("800 × 800 px: 64 tiles")
