"""Bad and unusual inputs through the real command line: each one is refused with exit status 2 and
one ``error:`` line (no traceback, no GDAL chatter), and leaves earlier outputs byte-identical.

The cases run as real processes, two at a time (most of a case is the interpreter starting), in
one module-scoped fixture; each case is then its own test of the recorded result.
"""

import json
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from osgeo import ogr, osr

from backend.io.clicks import Click, write_clicks
from backend.io.raster import inspect_raster
from backend.learn.disca import DiscaSettings
from backend.predict.job import PredictParameters, run_predict
from backend.session.session import Session
from tests.helpers import make_bundle, make_card, random_image, run_cli, write_raster

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple  # CLI arguments; "{w}" in a string stands for the world's folder
    message: str  # a fragment of the one error line


def bundle_with(world: Path, name: str, edit) -> Path:
    """A copy of the fast model whose model.json ``edit(card_dict)`` changes."""
    folder = world / name
    shutil.copytree(world / "model", folder)
    card = json.loads((folder / "model.json").read_text())
    edit(card)
    (folder / "model.json").write_text(json.dumps(card) if isinstance(card, dict) else card)
    return folder


def set_std(value):
    def edit(card):
        card["input"]["normalization"]["std"] = [value, 0.25, 0.25]

    return edit


def clicks_layer(path: Path, info, values, geometry="point", field="class_id", kind=ogr.OFTReal):
    """A GeoPackage layer of points (or a polygon) whose class field holds ``values``."""
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = info.ogr_srs()
    layer = source.CreateLayer("clicks", srs, ogr.wkbPoint if geometry == "point" else ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, kind))
    x, y = info.transform * (10.5, 10.5)
    for value in values:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(field, value)
        if geometry == "point":
            wkt = f"POINT ({x} {y})"
        else:
            wkt = f"POLYGON (({x} {y}, {x + 5} {y}, {x + 5} {y - 5}, {x} {y}))"
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    source = None
    return path


def huge_vrt(path: Path, small: Path, side: int) -> Path:
    """A side × side mosaic over one small GeoTIFF (the rest reads as zeros)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{small}</SourceFilename><SourceBand>{b}</SourceBand>"
        '<SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/><DstRect xOff="0" yOff="0" xSize="64" ySize="64"/>'
        "</SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    path.write_text(
        f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><SRS>{srs.ExportToWkt()}</SRS>'
        "<GeoTransform>300000, 0.5, 0, 2780000, 0, -0.5</GeoTransform>" + bands + "</VRTDataset>"
    )
    return path


def edited_session(world: Path, name: str, sql: str) -> Path:
    """A copy of the good session whose GeoPackage was edited by hand with ``sql``."""
    target = world / f"{name}.gpkg"
    shutil.copyfile(world / "good.gpkg", target)
    with sqlite3.connect(target) as db:
        db.executescript(sql)
    return target


def build_world(world: Path, fast_model: Path) -> dict:
    shutil.copytree(fast_model, world / "model")
    image = write_raster(world / "rgb.tif", random_image(256, 320, seed=9))
    info = inspect_raster(image)
    card = make_card()
    files = {
        "gray": write_raster(world / "gray.tif", random_image(64, 64, bands=1)),
        "nodata": write_raster(world / "nodata.tif", np.zeros((3, 64, 64), np.uint8), nodata=0),
        "rotated": write_raster(
            world / "rotated.tif",
            random_image(64, 64),
            transform=Affine(0.5, 0.1, 300_000, 0.1, -0.5, 2_780_000),
        ),
        "far": write_clicks(
            world / "far.gpkg",
            [Click(5, 5, 1)],
            inspect_raster(write_raster(world / "far.tif", random_image(10, 10), transform=None)),
            card,
        ),
    }
    (world / "text.tif").write_text("not a raster\n")
    (world / "empty.tif").write_bytes(b"")
    (world / "a-file").write_text("a file, not a folder\n")
    (world / "config.json").write_text("{not json")
    (world / "runs.json").write_text("[1, 2")
    damaged = write_raster(world / "damaged.tif", random_image(1024, 1024, seed=2), compress="jpeg")
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    huge_vrt(world / "huge.vrt", image, 2_000_000)
    for name, values, options in (
        ("inf", [float("inf")], {}),
        ("real", [1.9], {}),
        ("seven", [7], {"kind": ogr.OFTInteger}),
        ("unknown-name", ["lava"], {"field": "class_name", "kind": ogr.OFTString}),
        ("polygon", [1], {"geometry": "polygon", "kind": ogr.OFTInteger}),
        ("no-class", [1], {"field": "height", "kind": ogr.OFTInteger}),
    ):
        clicks_layer(world / f"{name}.gpkg", info, values, **options)
    # models
    bundle_with(world, "nested", lambda card: None)
    (world / "nested" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    (world / "not-json").mkdir()
    (world / "not-json" / "model.json").write_text("{")
    (world / "no-card").mkdir()
    bundle_with(world, "nan-std", set_std(float("nan")))
    bundle_with(world, "zero-std", set_std(0.0))
    bundle_with(
        world,
        "absolute-weights",
        lambda card: card["weights"].update(file=str(world / "model" / "model.safetensors")),
    )
    bundle_with(
        world, "climbing-weights", lambda card: card["weights"].update(file="../model/model.safetensors")
    )
    bundle_with(
        world, "climbing-head", lambda card: card.update(confidnet={"file": "../x.safetensors", "sha256": ""})
    )
    corrupt = bundle_with(world, "corrupt", lambda card: None)
    (corrupt / "model.safetensors").write_bytes(b"\0" * 1000)
    other = bundle_with(world, "other-weights", lambda card: card["weights"].update(sha256=""))
    make_bundle(world / "resnet18", encoder="resnet18")
    shutil.copyfile(world / "resnet18" / "model.safetensors", other / "model.safetensors")
    four_band = world / "four-bands"
    make_bundle(four_band, bands=4)
    # earlier outputs, which no refused run may change
    run_predict(PredictParameters(raster=image, out_dir=world / "earlier", model_dir=world / "model"))
    foreign = world / "foreign"
    foreign.mkdir()
    (foreign / "uncertainty.tif").write_bytes(b"someone else's heatmap")
    # sessions
    settings = DiscaSettings(steps=2, learning_rate=0.01, crop=128)
    with closing(
        Session.create(world / "good.gpkg", image, world / "model", "cpu", settings=settings)
    ) as session:
        session.add_click(30, 30, 1)
    with closing(Session.create(world / "fresh.gpkg", image, world / "model", "cpu")):
        pass
    edited_session(
        world,
        "bad-key",
        'UPDATE session SET value = \'{"kind": "disca", "speed": 3}\' WHERE key = \'disca\';',
    )
    edited_session(world, "not-json-value", "UPDATE session SET value = '{oops' WHERE key = 'raster';")
    edited_session(
        world, "no-clicks-table", "DROP TABLE clicks; DELETE FROM gpkg_contents WHERE table_name = 'clicks';"
    )
    return {"image": image, **files}


def cases() -> list[Case]:
    predict = ("predict", "{w}/rgb.tif", "--model", "{w}/model", "--out", "{w}/earlier", "--device", "cpu")

    def with_model(model, *extra):
        return ("predict", "{w}/rgb.tif", "--model", f"{{w}}/{model}", "--out", "{w}/earlier", *extra)

    def with_raster(raster, *extra):
        return ("predict", f"{{w}}/{raster}", "--model", "{w}/model", "--out", "{w}/earlier", *extra)

    def session(action, name, *extra):
        """A session command; writers get a copy of their own (the cases run two at a time, and a
        second writer on one session would only be told that it is busy)."""
        if action not in ("status", "export"):
            name = f"{name}--{action}-{extra[1] if len(extra) > 1 else 0}"
        return ("session", action, f"{{w}}/{name}.gpkg", *extra, "--device", "cpu")

    return [
        Case("missing raster", with_raster("nowhere.tif"), "raster not found"),
        Case("text file named .tif", with_raster("text.tif"), "not a raster GDAL can read"),
        Case("zero-byte raster", with_raster("empty.tif"), "is an empty file"),
        Case("folder as raster", with_raster("no-card"), "is a folder, not a raster"),
        Case("damaged blocks", with_raster("damaged.tif"), "damaged.tif is damaged: the block at row"),
        Case("one band for three", with_raster("gray.tif"), "has 1 band(s)"),
        Case("all nodata", with_raster("nodata.tif"), "every pixel of nodata.tif is nodata"),
        Case("rotated grid", with_raster("rotated.tif"), "rotated geotransform"),
        Case("huge mosaic", with_raster("huge.vrt"), "not enough space in"),
        Case("missing model", with_model("no-such-model"), "model bundle not found"),
        Case("folder without card", with_model("no-card"), "no model.json in it"),
        Case("card not JSON", with_model("not-json"), "is not valid JSON"),
        Case("card nested deeply", with_model("nested"), "nested too deeply"),
        Case("NaN std", with_model("nan-std"), "'input.normalization.std' holds a value that is not a finite"),
        Case("zero std", with_model("zero-std"), "'input.normalization.std' must be positive"),
        Case("absolute weights path", with_model("absolute-weights"), "'weights.file' must be a file name inside"),
        Case("weights path climbing out", with_model("climbing-weights"), "'weights.file' must be a file name"),
        Case("head path climbing out", with_model("climbing-head"), "'confidnet.file' must be a file name"),
        Case("corrupt weights", with_model("corrupt"), "is corrupt or was replaced"),
        Case("another network's weights", with_model("other-weights"), "do not fit"),
        Case("model for four bands", with_model("four-bands"), "has 3 band(s) but the model reads bands 1, 2, 3, 4"),
        Case("no ConfidNet head", (*predict, "--acquisition", "confidnet"), "has no ConfidNet head"),
        Case("out is a file", (*predict[:5], "{w}/a-file"), "exists and is not a folder"),
        Case("out under a file", (*predict[:5], "{w}/a-file/out"), "cannot create output folder"),
        Case("someone else's heatmap", (*predict[:5], "{w}/foreign"), "uncertainty.tif, which this program did not write"),
        Case("missing clicks", (*predict, "--clicks", "{w}/none.gpkg"), "clicks file not found"),
        Case("clicks class inf", (*predict, "--clicks", "{w}/inf.gpkg"), "has class inf: a class is a whole number"),
        Case("clicks class 1.9", (*predict, "--clicks", "{w}/real.gpkg"), "has class 1.9: a class is a whole number"),
        Case("clicks class 7", (*predict, "--clicks", "{w}/seven.gpkg"), "has class 7; the model's classes are 0–4"),
        Case("clicks class name", (*predict, "--clicks", "{w}/unknown-name.gpkg"), "class 'lava' is not a class"),
        Case("clicks are polygons", (*predict, "--clicks", "{w}/polygon.gpkg"), "is a POLYGON, not a point"),
        Case("clicks without class", (*predict, "--clicks", "{w}/no-class.gpkg"), "has no class field"),
        Case("clicks far away", (*predict, "--clicks", "{w}/far.gpkg"), "lie outside the raster"),
        Case("clicks not a vector", (*predict, "--clicks", "{w}/text.tif"), "is not a vector file GDAL can read"),
        Case("tile not a multiple", (*predict, "--tile", "100"), "tile size must be a positive multiple of 32"),
        Case("overlap too large", (*predict, "--overlap", "600"), "overlap must be at least 0 and less than"),
        Case("no GPU", (*predict[:-1], "cuda"), "--device cuda"),
        Case("session missing", session("status", "none"), "session not found"),
        Case("session not a GeoPackage", ("session", "status", "{w}/text.tif"), "is not a session GeoPackage"),
        Case("session exists", ("session", "create", "{w}/good.gpkg", "--raster", "{w}/rgb.tif", "--model", "{w}/model"), "already exists"),
        Case("session raster too few bands", ("session", "create", "{w}/new.gpkg", "--raster", "{w}/gray.tif", "--model", "{w}/model"), "has 1 band(s)"),
        Case("session unknown class", session("click", "good", "--class", "lava", "--pixel", "1", "1"), "unknown class 'lava'"),
        Case("session click outside", session("click", "good", "--class", "1", "--pixel", "900", "1"), "is outside the raster"),
        Case("session remove unknown", session("remove", "good", "999"), "no click 999 in this session"),
        Case("session retrain no clicks", session("retrain", "fresh"), "no clicks to learn from"),
        Case("session undo nothing", session("undo", "fresh"), "nothing to undo"),
        Case("session export onto a file", session("export", "good", "--out", "{w}/a-file"), "exists and is not a folder"),
        Case("session bad setting", session("status", "bad-key"), "its retraining settings are not valid"),
        Case("session value not JSON", session("status", "not-json-value"), "value for 'raster' is not JSON"),
        Case("session clicks table gone", session("click", "no-clicks-table", "--class", "1", "--pixel", "1", "1"), "'clicks' table(s) are missing"),
        Case("create-model bad bands", ("create-model", "--out", "{w}/cm", "--classes", "a,b", "--bands", "x"), "--bands must be comma-separated"),
        Case("info on a folder", ("info", "{w}/no-card"), "neither a model bundle nor a raster"),
        Case("benchmark without labels", ("benchmark", "{w}/rgb.tif", "--model", "{w}/model", "--out", "{w}/b", "--clicks", "3"), "needs labels"),
        Case("plot unreadable", ("plot", "{w}/runs.json", "--out", "{w}/plot.png"), "cannot read benchmark results"),
        Case("train config not JSON", ("train", "{w}/config.json", "--out", "{w}/trained"), "config.json"),
    ]  # fmt: skip


CASES = cases()


def copy_sessions_for_writers(world: Path) -> None:
    for case in CASES:
        path = Path(str(case.args[2]).replace("{w}", str(world))) if case.args[0] == "session" else None
        if path is not None and "--" in path.stem:
            shutil.copyfile(world / f"{path.stem.split('--')[0]}.gpkg", path)


def snapshot(world: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(world)): p.read_bytes()
        for p in sorted(world.rglob("*"))
        if p.is_file() and not p.name.endswith(".sial-lock")
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory, fast_model):
    world = tmp_path_factory.mktemp("hostile")
    build_world(world, fast_model)
    copy_sessions_for_writers(world)
    before = snapshot(world)

    def run(case: Case):
        return run_cli(*(str(a).replace("{w}", str(world)) for a in case.args))

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip((c.name for c in CASES), pool.map(run, CASES), strict=True))
    return world, before, snapshot(world), done


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_is_one_clear_error(results, case):
    result = results[3][case.name]
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "ERROR 1" not in result.stderr


def test_no_refused_run_changed_or_left_a_file(results):
    _, before, after, _ = results
    assert sorted(set(after) - set(before)) == []  # nothing new: no partial output, no staging
    changed = [name for name in before if after.get(name) != before[name]]
    assert changed == []
