"""The command-line contract: outputs, `info`, and one clear line + exit 2 for bad input."""

import json

import numpy as np
import pytest
import torch

from backend.io.clicks import Click, write_clicks
from backend.io.raster import inspect_raster
from tests.helpers import make_card, random_image, run_cli, write_raster


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("cli") / "rgb.tif", random_image(300, 400, seed=5))


def assert_clean_failure(result, out, message):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], f"outputs left behind: {leftovers}"


def test_predict_writes_the_four_outputs_and_says_where(tmp_path, raster, fast_model):
    out = tmp_path / "out"
    result = run_cli("predict", raster, "--model", fast_model, "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for name in ("classes.tif", "uncertainty.tif", "patches.gpkg", "run.json"):
        assert (out / name).is_file()
        assert str(out / name) in result.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["device"].startswith("cpu") and run["tile_count"] == 1


def test_info_describes_models_and_rasters(raster, fast_model):
    model = json.loads(run_cli("info", fast_model, "--json").stdout)
    assert model["kind"] == "model bundle" and model["in_channels"] == 8 and model["parameters"] > 0
    assert [c["name"] for c in model["classes"]][:2] == ["building", "land"]
    described = json.loads(run_cli("info", raster, "--json").stdout)
    assert described["size"] == [400, 300] and described["crs"] == "EPSG:32640"
    assert described["tiles_512_overlap_128"] == 1
    text = run_cli("info", raster)
    assert text.returncode == 0 and "EPSG:32640" in text.stdout


def test_create_model_writes_a_bundle_that_loads(tmp_path):
    result = run_cli(
        "create-model", "--out", tmp_path / "m", "--classes", "tree:#00ff00,other", "--bands", "1,2,3,4"
    )
    assert result.returncode == 0, result.stderr
    model = json.loads(run_cli("info", tmp_path / "m", "--json").stdout)
    assert model["in_channels"] == 4 + 2 and model["classes"][0]["color"] == "#00ff00"


def test_a_text_file_named_tif(tmp_path, fast_model):
    fake = tmp_path / "fake.tif"
    fake.write_text("this is not a raster\n")
    out = tmp_path / "out"
    assert_clean_failure(
        run_cli("predict", fake, "--model", fast_model, "--out", out), out, "not a raster GDAL can read"
    )


def test_a_one_band_raster_for_a_three_band_model(tmp_path, fast_model):
    gray = write_raster(tmp_path / "gray.tif", random_image(64, 64, bands=1))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("predict", gray, "--model", fast_model, "--out", out), out, "has 1 band(s)")


def test_clicks_outside_the_raster(tmp_path, raster, fast_model):
    card = make_card()
    far = inspect_raster(
        write_raster(tmp_path / "far.tif", random_image(10, 10), transform=None, crs="EPSG:32640")
    )
    clicks = write_clicks(tmp_path / "far.gpkg", [Click(5, 5, 1)], far, card)  # near (0, 0) UTM: far away
    out = tmp_path / "out"
    result = run_cli("predict", raster, "--model", fast_model, "--out", out, "--clicks", clicks)
    assert_clean_failure(result, out, "lie outside the raster")


def test_some_clicks_outside_can_be_skipped_on_request(tmp_path, raster, fast_model):
    info = inspect_raster(raster)
    card = make_card()
    inside = write_clicks(tmp_path / "in.gpkg", [Click(5, 5, 1)], info, card)
    from osgeo import ogr

    source = ogr.Open(str(inside), 1)
    layer = source.GetLayerByName("clicks")
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("class_id", 2)
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (1 1)"))
    layer.CreateFeature(feature)
    source = None
    out = tmp_path / "out"
    result = run_cli(
        "predict", raster, "--model", fast_model, "--out", out, "--clicks", inside, "--skip-outside-clicks"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr
    assert json.loads((out / "run.json").read_text())["clicks"] == {"used": 1, "outside": 1}


def test_a_zero_byte_raster(tmp_path, fast_model):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("predict", empty, "--model", fast_model, "--out", out), out, "empty file")


def test_an_all_nodata_raster(tmp_path, fast_model):
    blank = write_raster(tmp_path / "blank.tif", np.zeros((3, 80, 80), np.uint8), nodata=0)
    out = tmp_path / "out"
    assert_clean_failure(run_cli("predict", blank, "--model", fast_model, "--out", out), out, "is nodata")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_requested_without_a_gpu(tmp_path, raster, fast_model):
    out = tmp_path / "out"
    result = run_cli("predict", raster, "--model", fast_model, "--out", out, "--device", "cuda")
    assert_clean_failure(result, out, "no CUDA GPU is available")


def test_a_missing_model_bundle(tmp_path, raster):
    out = tmp_path / "out"
    result = run_cli("predict", raster, "--model", tmp_path / "no-such-model", "--out", out)
    assert_clean_failure(result, out, "model bundle not found")


def test_a_corrupt_model_bundle(tmp_path, raster, fast_model):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(fast_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    assert_clean_failure(run_cli("predict", raster, "--model", broken, "--out", out), out, "corrupt")


def test_a_missing_raster(tmp_path, fast_model):
    out = tmp_path / "out"
    assert_clean_failure(
        run_cli("predict", tmp_path / "nowhere.tif", "--model", fast_model, "--out", out),
        out,
        "raster not found",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--iterations", "0"], "must be at least 1"),
        (["--expand", "slic", "--segment-size", "0"], "superpixel size must be at least one pixel"),
        (["--expand", "slic", "--sieve", "1.5"], "sieve threshold must lie in (0, 1]"),
        (["--expand", "slic", "--sieve", "high"], "--sieve takes a probability or 'none'"),
        (["--colour-jitter", "1"], "the colour jitter must lie in [0, 1)"),
    ],
)
def test_the_sial_protocol_refuses_settings_that_cannot_work(tmp_path, options, message):
    out = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text("{}")
    result = run_cli("benchmark", "--protocol", "sial", "--config", config, "--out", out, *options)
    assert_clean_failure(result, out, message)


def test_a_session_refuses_a_prior_correction_without_sial_rounds(tmp_path, raster, fast_model):
    out = tmp_path / "sessions"
    out.mkdir()
    result = run_cli(
        "session", "create", out / "s.gpkg", "--raster", raster, "--model", fast_model, "--adjust-prior"
    )
    assert_clean_failure(result, out, "--adjust-prior corrects SIAL rounds: it needs --sial")


def test_a_sial_session_makes_its_own_network_for_new_classes(tmp_path, raster):
    from backend.model.bundle import read_card
    from backend.session.session import Session
    from backend.session.settings import SialSettings

    session = tmp_path / "fields.gpkg"
    classes = "crop, fallow:#aa8844"
    created = run_cli("session", "create", session, "--raster", raster, "--sial", "--classes", classes)
    assert created.returncode == 0, created.stderr
    card = read_card(tmp_path / "fields-model")
    assert [(c.name, c.color) for c in card.classes] == [("crop", "#e41a1c"), ("fallow", "#aa8844")]
    assert not card.clicks.enabled and card.input.bands == (1, 2, 3)
    opened = Session.open(session, "cpu")
    assert opened.settings == SialSettings.recommended()
    opened.close()
    again = run_cli("session", "create", session, "--raster", raster, "--sial", "--classes", "a, b")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--classes", "a, b"], "use it with --sial, not --model"),
        (["--sial"], "a session needs --model (or --sial --classes"),
        (["--sial", "--classes", "water"], "at least two class names"),
    ],
)
def test_a_session_without_a_model_is_refused_cleanly(tmp_path, raster, options, message):
    out = tmp_path / "sessions"
    out.mkdir()
    assert_clean_failure(
        run_cli("session", "create", out / "s.gpkg", "--raster", raster, *options), out, message
    )
