# pytest-qgis starts QGIS before this file is read: run pytest with QT_QPA_PLATFORM=offscreen
# (./dev.sh test does) on a machine without a display.
import pytest

from tests.helpers import SHARED_DATA, SHARED_MISSING, make_bundle


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(SHARED_MISSING)
    return SHARED_DATA


@pytest.fixture(scope="session")
def fast_model(tmp_path_factory):
    """A small real smp network (LinkNet, MobileNetV3 encoder), fixed seed: geometry tests."""
    directory = tmp_path_factory.mktemp("models") / "fast"
    make_bundle(directory)
    return directory


@pytest.fixture(scope="session")
def small_tile_model(tmp_path_factory):
    """The fast network with 128-pixel tiles overlapping by 32: many tiles on small rasters."""
    directory = tmp_path_factory.mktemp("models") / "small-tiles"
    make_bundle(directory, tile=128, overlap=32)
    return directory


@pytest.fixture(scope="session")
def default_model(tmp_path_factory):
    """The default architecture (LinkNet-ResNet34), freshly initialised with seed 0."""
    directory = tmp_path_factory.mktemp("models") / "linknet34"
    make_bundle(directory, encoder="resnet34")
    return directory
