"""A session's own files: listed, named, and deleted without touching anything else."""

import subprocess
import sys
from contextlib import closing

import pytest

from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.learn.new_model import create_model_for_raster, parse_classes
from backend.session import files
from backend.session.session import Session
from backend.session.settings import SialSettings
from tests.helpers import REPO, random_image, write_raster

QUICK = DiscaSettings(steps=2, learning_rate=0.01, crop=128)


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("files-scene") / "field.tif", random_image(256, 256, seed=4))


def worked_session(path, raster, model):
    """A session with a prediction, a click and a retraining round: every kind of file it writes."""
    with closing(Session.create(path, raster, model, "cpu", settings=QUICK)) as session:
        session.predict()
        session.add_click(20, 20, 1)
        session.retrain()
        session.predict()
    return path


def test_a_folder_lists_its_sessions_newest_first_with_a_default_name(tmp_path, raster, small_tile_model):
    first = Session.create(tmp_path / "a.gpkg", raster, small_tile_model, "cpu")
    first.add_click(5, 5, 0)
    first.close()
    Session.create(tmp_path / "b.gpkg", raster, small_tile_model, "cpu").close()
    (tmp_path / "not-a-session.gpkg").write_bytes(b"SQLite format 3\0 but not really")
    write_raster(tmp_path / "image.tif", random_image(8, 8))
    listed = files.find_sessions(tmp_path)
    assert [s.path.name for s in listed] == ["b.gpkg", "a.gpkg"] or listed[0].created == listed[1].created
    summary = files.read_summary(tmp_path / "a.gpkg")
    assert summary.clicks == 1 and summary.rounds == 0 and summary.kind == "disca"
    assert summary.label.startswith(f"field · {small_tile_model.name} · 20")
    assert files.read_summary(tmp_path / "not-a-session.gpkg") is None
    assert files.read_summary(tmp_path / "missing.gpkg") is None


def test_a_session_is_named_under_its_lock(tmp_path, raster, small_tile_model):
    path = tmp_path / "named.gpkg"
    with closing(Session.create(path, raster, small_tile_model, "cpu")) as session:
        files.set_label(path, "  north   field, first pass ")  # the plugin's own lock is shared
        files.set_label(path, "north field, second pass")
        assert session.clicks() == []
    assert files.read_summary(path).label == "north field, second pass"
    with closing(Session.open(path, "cpu")) as session:  # the engine reads past the new key
        assert session.iteration == 0
    with pytest.raises(UserError, match="cannot be empty"):
        files.set_label(path, "   ")


def test_deleting_removes_the_sessions_files_and_keeps_everyone_elses(tmp_path, raster, small_tile_model):
    path = worked_session(tmp_path / "work.gpkg", raster, small_tile_model)
    outputs, checkpoints = tmp_path / "work.outputs", tmp_path / "work.checkpoints"
    assert (outputs / "classes.tif").is_file() and list(checkpoints.glob("round-*.safetensors"))
    (outputs / "notes.txt").write_text("mine")  # the analyst's, in the session's folder
    (tmp_path / "field-notes.odt").write_bytes(b"mine too")
    model_files = sorted(p.name for p in small_tile_model.iterdir())
    seen = []  # QGIS lets go of the session's layers then: the lock is held, nothing removed yet
    deletion = files.delete_session(path, before=lambda: seen.append((path.exists(), outputs.exists())))
    assert seen == [(True, True)]
    assert not path.exists() and not checkpoints.exists() and not (tmp_path / "work.sial-lock").exists()
    assert (outputs / "notes.txt").read_text() == "mine" and deletion.kept == [outputs / "notes.txt"]
    assert sorted(p.name for p in outputs.iterdir()) == ["notes.txt"]  # no cache, no manifest left
    assert (tmp_path / "field-notes.odt").exists() and sorted(
        p.name for p in small_tile_model.iterdir()
    ) == model_files
    assert path in deletion.removed and outputs / "classes.tif" in deletion.removed


def test_a_checkpoints_folder_keeps_what_is_not_a_checkpoint(tmp_path, raster, small_tile_model):
    path = worked_session(tmp_path / "s.gpkg", raster, small_tile_model)
    (tmp_path / "s.checkpoints" / "round-0001.bak").write_bytes(b"a copy of mine")
    deletion = files.delete_session(path)
    assert [p.name for p in deletion.kept] == ["round-0001.bak"]
    assert sorted(p.name for p in (tmp_path / "s.checkpoints").iterdir()) == ["round-0001.bak"]


def test_a_sial_sessions_own_network_goes_with_it_a_bundle_it_merely_uses_stays(tmp_path, raster):
    model = create_model_for_raster(raster, parse_classes("crop, fallow"), tmp_path / "sial-model")
    path = tmp_path / "sial.gpkg"
    Session.create(path, raster, model, "cpu", settings=SialSettings.recommended()).close()
    assert files.read_summary(path).kind == "sial"
    files.delete_session(path)
    assert not model.exists() and list(tmp_path.iterdir()) == []

    other = create_model_for_raster(raster, parse_classes("crop, fallow"), tmp_path / "shared-model")
    Session.create(tmp_path / "uses.gpkg", raster, other, "cpu", settings=SialSettings.recommended()).close()
    files.delete_session(tmp_path / "uses.gpkg")  # not uses-model/: another session's, or the user's
    assert (other / "model.json").is_file()


def test_an_untrained_bundle_is_removed_file_by_file_and_a_trained_one_never(
    tmp_path, raster, small_tile_model
):
    model = create_model_for_raster(raster, parse_classes("a, b"), tmp_path / "x-model")
    (model / "README.txt").write_text("mine")
    deletion = files.remove_new_model(model)
    assert sorted(p.name for p in model.iterdir()) == ["README.txt"] and deletion.kept == [
        model / "README.txt"
    ]
    before = sorted(p.name for p in small_tile_model.iterdir())
    assert files.remove_new_model(small_tile_model).kept == [small_tile_model]  # a trained bundle
    assert sorted(p.name for p in small_tile_model.iterdir()) == before
    moved = create_model_for_raster(raster, parse_classes("a, b"), tmp_path / "y-model").rename(
        tmp_path / "z"
    )
    assert (
        files.remove_new_model(moved).kept == [moved] and (moved / "model.json").is_file()
    )  # not made there


def test_a_session_another_process_has_open_is_not_deleted(tmp_path, raster, small_tile_model):
    path = worked_session(tmp_path / "busy.gpkg", raster, small_tile_model)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = f"from backend.session.session import Session; s = Session.open({str(path)!r}, 'cpu'); "
    code += "print(1, flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"1"
        with pytest.raises(UserError, match=rf"session busy.gpkg is busy: process {holder.pid}"):
            files.delete_session(path)
        with pytest.raises(UserError, match="is busy"):
            files.set_label(path, "renamed")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with pytest.raises(UserError, match="is not a session"):
        files.delete_session(tmp_path / "busy.outputs" / "classes.tif")


def test_the_names_it_repeats_are_the_engines():
    from backend.predict.reuse import CACHE_DIR
    from backend.session.checkpoints import CHECKPOINT_NAME

    assert files.CACHE_FOLDER == CACHE_DIR and files.CHECKPOINT_FILE.pattern == CHECKPOINT_NAME.pattern
