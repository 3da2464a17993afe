"""Never losing a user's data: files the program did not write, one writer per session, damaged
checkpoints, a full disk. Each test is one way data was lost before (issue 21)."""

import errno
import os
import shutil
import subprocess
import sys
from contextlib import closing

import pytest

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.model.bundle import load_bundle, save_bundle
from backend.predict.job import CACHE_DIR, PredictParameters, run_predict
from backend.session.session import Session
from tests.helpers import REPO, make_bundle, random_image, run_cli, run_on_small_disk, write_raster

QUICK = DiscaSettings(steps=2, learning_rate=0.01, crop=128)


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("safety") / "rgb.tif", random_image(256, 320, seed=3))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("safety-scene"), size=256, seed=2)


@pytest.fixture
def trained(tmp_path, scene, small_tile_model):
    """A session (closed again) with two clicks and one retraining round."""
    path = tmp_path / "s.gpkg"
    with closing(Session.create(path, scene.image, small_tile_model, "cpu", settings=QUICK)) as session:
        session.add_click(40, 40, 1)
        session.add_click(200, 180, 3)
        session.retrain()
    return path


def snapshot(folder):
    """Every file under ``folder`` with its bytes (symlinks as their target)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        files[key] = (
            os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
        )
    return files


def user_folder(root):
    root.mkdir()
    (root / "thesis.txt").write_text("three years of work\n")
    (root / "sub").mkdir()
    (root / "sub" / "notes.md").write_text("keep me\n")
    return snapshot(root)


# ---------------------------------------------------------------- files the program did not write


def test_exporting_a_session_into_a_users_folder_adds_a_sub_folder(tmp_path, trained):
    mine = tmp_path / "mine"
    before = user_folder(mine)
    result = run_cli("session", "export", trained, "--out", mine, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    written = mine / "test-timm-mobilenetv3_small_minimal_100-adapted"
    assert f"wrote {written}" in result.stdout
    assert load_bundle(written).card.provenance["adapted"]["rounds"] == 1
    after = snapshot(mine)
    assert {k: v for k, v in after.items() if k in before} == before  # every file of the user's, unchanged
    again = run_cli("session", "export", trained, "--out", mine, "--device", "cpu")  # replaces its own export
    assert again.returncode == 0, again.stderr
    assert {k: v for k, v in snapshot(mine).items() if k in before} == before


def test_create_model_into_a_users_folder_keeps_every_file(tmp_path):
    mine = tmp_path / "mine"
    before = user_folder(mine)
    result = run_cli("create-model", "--out", mine, "--classes", "a,b", "--name", "fresh")
    assert result.returncode == 0, result.stderr
    assert load_bundle(mine / "fresh").card.n_classes == 2
    assert {k: v for k, v in snapshot(mine).items() if k in before} == before


def test_a_bundle_is_not_written_over_a_users_folder_of_the_models_name(tmp_path):
    mine = tmp_path / "mine"
    user_folder(mine)
    (mine / "fresh").mkdir()
    (mine / "fresh" / "data.csv").write_text("1,2\n")
    before = snapshot(mine)
    result = run_cli("create-model", "--out", mine, "--classes", "a,b", "--name", "fresh")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "fresh" in result.stderr
    assert snapshot(mine) == before


def test_replacing_a_bundle_touches_only_the_bundles_files(tmp_path):
    folder = tmp_path / "bundle"
    first = make_bundle(folder)
    (folder / "my-evaluation.txt").write_text("kept\n")
    (folder / "runs").mkdir()
    (folder / "runs" / "log.txt").write_text("kept too\n")
    weight = next(first.network.parameters())
    weight.data.mul_(2.0)
    assert save_bundle(first, folder, dtype="float32") == folder
    assert (folder / "my-evaluation.txt").read_text() == "kept\n"
    assert (folder / "runs" / "log.txt").read_text() == "kept too\n"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert next(load_bundle(folder).network.parameters()).equal(weight)


def test_predict_removes_only_its_own_cache(tmp_path, raster, fast_model):
    work = tmp_path / "w"
    (work / ".cache" / "pip").mkdir(parents=True)
    (work / ".cache" / "pip" / "wheel.whl").write_bytes(b"someone else's")
    before = snapshot(work)
    for cache in ("--cache", None, "--cache", None):  # a cached run, then plain runs that drop it
        result = run_cli("predict", raster, "--model", fast_model, "--out", work, *([cache] if cache else []))
        assert result.returncode == 0, result.stderr
        assert (work / CACHE_DIR).is_dir() == (cache is not None)
    assert {k: v for k, v in snapshot(work).items() if k.startswith(".cache")} == before


def test_predict_refuses_to_replace_files_it_did_not_write(tmp_path, raster, fast_model):
    out = tmp_path / "maps"
    out.mkdir()
    (out / "classes.tif").write_bytes(b"the user's own class map")
    (out / ".sial-staging-notmine").mkdir()  # looks like ours, is not: never removed
    before = snapshot(out)
    result = run_cli("predict", raster, "--model", fast_model, "--out", out)
    assert result.returncode == 2 and "classes.tif" in result.stderr and "did not write" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_a_stale_staging_folder_of_a_dead_run_is_removed_and_nothing_else(tmp_path, raster, fast_model):
    out = tmp_path / "maps"
    params = PredictParameters(raster=raster, out_dir=out, model_dir=fast_model)
    run_predict(params)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = out / f".sial-staging-{int(dead.stdout)}-abc123"
    stale.mkdir()
    (stale / "classes.tif").write_bytes(b"half")
    keep = out / ".sial-staging-notes"
    keep.mkdir()
    run_predict(params)
    assert not stale.exists() and keep.is_dir()


# ---------------------------------------------------------------- one writer per session


def hold_session(path, device="cpu"):
    """A second real process that opens the session for writing and keeps it open."""
    code = (
        "import sys, time\n"
        "from backend.session.session import Session\n"
        f"s = Session.open({str(path)!r}, 'cpu')\n"
        "print('holding', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid(trained):
    holder = hold_session(trained)
    try:
        for command in (
            ("retrain", "--disca-steps", "2"),
            ("click", "--class", "1", "--pixel", "5", "5"),
            ("undo",),
        ):
            result = run_cli("session", command[0], trained, *command[1:], "--device", "cpu")
            assert result.returncode == 2, result.stderr
            assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
            assert "is busy" in result.stderr and f"process {holder.pid}" in result.stderr
        status = run_cli("session", "status", trained, "--device", "cpu")  # readers need no lock
        assert status.returncode == 0 and "iteration 1: retrain" in status.stdout
    finally:
        holder.kill()
        holder.wait()
    after = run_cli("session", "click", trained, "--class", "1", "--pixel", "5", "5", "--device", "cpu")
    assert after.returncode == 0, after.stderr  # a lock dies with its process


@pytest.mark.slow
def test_two_retrains_at_once_never_share_a_round(trained):
    command = [sys.executable, "-m", "backend", "--quiet", "session", "retrain", str(trained)]
    runs = [
        subprocess.Popen([*command, "--device", "cpu", "--disca-steps", "3"], cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    succeeded = [out for code, out, _ in results if code == 0]
    refused = [err for code, _, err in results if code != 0]
    assert all(code in (0, 2) for code, _, _ in results), results
    assert all("is busy" in err for err in refused)
    rounds = sorted(int(out.split()[1].rstrip(":")) for out in succeeded)
    assert rounds == list(range(2, 2 + len(succeeded)))  # distinct rounds, in order
    with closing(Session.open(trained, "cpu")) as session:
        assert [i.iteration for i in session.iterations()] == [0, 1, *rounds]
        assert session.notices == []  # every checkpoint intact
    for _ in rounds:  # the undo log is in step: each undo removes one round
        assert run_cli("session", "undo", trained, "--device", "cpu").stdout.startswith("undid retraining")


def test_a_reader_never_removes_a_writers_checkpoint_in_progress(trained):
    holder = hold_session(trained)
    try:
        checkpoints = trained.with_suffix(".checkpoints")
        in_progress = checkpoints / "round-0002.safetensors.tmp"
        in_progress.write_bytes(b"the writer is saving this")
        status = run_cli("session", "status", trained, "--device", "cpu")
        assert status.returncode == 0, status.stderr
        assert in_progress.read_bytes() == b"the writer is saving this"
    finally:
        holder.kill()
        holder.wait()
    with closing(Session.open(trained, "cpu")):  # a writer, once nobody holds the lock, tidies up
        assert not in_progress.exists()
        assert (checkpoints / "round-0001.safetensors").is_file()


# ---------------------------------------------------------------- checkpoints verified


@pytest.mark.parametrize("damage", ["remove", "truncate", "other model"])
def test_a_damaged_checkpoint_is_reported_and_the_newest_intact_round_used(trained, tmp_path, damage):
    checkpoint = trained.with_suffix(".checkpoints") / "round-0001.safetensors"
    if damage == "remove":
        checkpoint.unlink()
    elif damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        other = make_bundle(tmp_path / "other", encoder="resnet18")
        shutil.copyfile(tmp_path / "other" / other.card.weights_file, checkpoint)
    status = run_cli("session", "status", trained, "--device", "cpu")
    assert status.returncode == 0, status.stderr
    assert status.stderr.startswith("note: round 1's checkpoint round-0001.safetensors is ")
    assert "the model is the starting weights" in status.stderr
    assert "iteration 0: start, 0 clicks, checkpoint -, mIoU - (current model)" in status.stdout
    predicted = run_cli("session", "predict", trained, "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr
    undo = run_cli("session", "undo", trained, "--device", "cpu")
    assert undo.returncode == 0 and undo.stdout.strip() == "undid retraining round 1", undo.stderr
    after = run_cli("session", "status", trained, "--device", "cpu")
    assert after.returncode == 0 and after.stderr == "" and "iteration 1" not in after.stdout
    assert not checkpoint.exists()


def test_a_damaged_newest_round_falls_back_to_the_round_before(trained):
    with closing(Session.open(trained, "cpu")) as session:
        session.add_click(100, 100, 2)
        session.retrain()
        round_one = session.iterations()[1]
    newest = trained.with_suffix(".checkpoints") / "round-0002.safetensors"
    newest.write_bytes(b"\0" * newest.stat().st_size)
    with closing(Session.open(trained, "cpu")) as session:
        assert session.current == round_one and session.iteration == 2
        assert "round 2's checkpoint round-0002.safetensors is damaged" in session.notices[0]
        assert session.model_key() == round_one.sha256
        session.retrain()  # training goes on from round 1's weights, as round 3
        assert [i.iteration for i in session.iterations()] == [0, 1, 2, 3]
        assert session.undo() == "undid retraining round 3"
        assert session.current == round_one


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real small filesystem (tmpfs in a private mount namespace), or a skip saying why not."""
    mount = tmp_path / "disk"
    mount.mkdir()
    probe = run_on_small_disk(mount, 64, "true")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (unshare/mount refused: {probe.stderr.strip()[:80]})")
    return mount


def test_predict_refuses_up_front_what_cannot_fit(tmp_path, small_disk, fast_model):
    big = write_raster(tmp_path / "big.tif", random_image(1024, 1024, seed=1))
    out = small_disk / "out"
    command = f"{sys.executable} -m backend --quiet predict {big} --model {fast_model} --out {out} --cache"
    result = run_on_small_disk(small_disk, 20_000, command + f"; echo exit=$?; ls -A {small_disk}")
    assert "exit=2" in result.stdout, result.stdout + result.stderr
    expected = f"not enough space in {out}: the maps need about 4.5 MB and the tile cache 45 MB, 20 MB free"
    assert result.stderr == f"error: {expected}\n"
    assert result.stdout.split("exit=2")[1].split() == []  # not even the output folder


def test_a_disk_that_fills_up_during_predict_is_one_clear_error(tmp_path, small_disk, fast_model):
    """Two runs share a disk with room for one: each passes the check up front, then one of them
    (or both) finds the disk full while writing, or, if they did not overlap, the second is
    refused; every failure is one clear line and leaves nothing behind."""
    image = write_raster(tmp_path / "r.tif", random_image(1024, 1024, seed=1))
    run = f"{sys.executable} -m backend --quiet predict {image} --model {fast_model} --out {small_disk}"
    command = f"({run}/a; echo a=$?) & ({run}/b; echo b=$?) & wait; ls -A {small_disk}/a {small_disk}/b"
    result = run_on_small_disk(small_disk, 7000, command)
    codes = {line[0]: line[2:] for line in result.stdout.splitlines() if line[:2] in ("a=", "b=")}
    # One finishes and the other fails; or, when their writes interleave, both fill the disk.
    assert sorted(codes) == ["a", "b"] and set(codes.values()) <= {"0", "2"}, result.stdout + result.stderr
    failed = sorted(name for name, code in codes.items() if code == "2")
    assert failed, result.stdout + result.stderr
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert len(errors) == len(failed), result.stderr
    for name, error in zip(failed, errors, strict=True):
        assert error.startswith(f"error: not enough space in {small_disk}/{name}"), error
        assert f"cannot access '{small_disk}/{name}'" in result.stderr  # nothing left where it wrote
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("Free disk space available is 3145728 bytes, whereas 4194304 are at least necessary"),
        RuntimeError("sqlite3_exec(CREATE TABLE gpkg_contents (...)) failed: database or disk is full"),
    ],
)
def test_every_way_the_libraries_say_disk_full_is_recognised(error):
    from backend.system.diskspace import is_disk_full

    assert is_disk_full(error)
    assert not is_disk_full(RuntimeError("sqlite3_exec(ROLLBACK) failed: cannot rollback"))


def test_a_disk_that_fills_up_during_predict_leaves_no_partial_cache(
    tmp_path, raster, fast_model, monkeypatch
):
    out = tmp_path / "out"
    real_pwrite, writes = os.pwrite, []

    def pwrite(fd, data, offset):
        writes.append(offset)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    small = write_raster(tmp_path / "two-tiles.tif", random_image(256, 700, seed=4))
    with pytest.raises(UserError, match=r"not enough space in .*the disk filled up while writing"):
        run_predict(PredictParameters(raster=small, out_dir=out, model_dir=fast_model, cache=True))
    assert not out.exists()  # no cache (1.3 GB for 6000²) left filling the disk, no empty folder


def test_a_disk_that_fills_up_while_saving_a_checkpoint_keeps_the_round_before(trained, monkeypatch):
    import safetensors.torch

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with closing(Session.open(trained, "cpu")) as session:
        before = {k: v.clone() for k, v in session.bundle.network.state_dict().items()}
        monkeypatch.setattr(safetensors.torch, "save_file", full)
        with pytest.raises(UserError, match=r"not enough space in .*checkpoints"):
            session.retrain()
        assert session.iteration == 1
        assert all(v.equal(before[k]) for k, v in session.bundle.network.state_dict().items())
    assert sorted(p.name for p in trained.with_suffix(".checkpoints").iterdir()) == ["round-0001.safetensors"]


def test_a_retrain_on_a_full_disk_keeps_the_session_as_it_was(tmp_path, small_disk, scene, small_tile_model):
    session = small_disk / "s.gpkg"
    cli = f"{sys.executable} -m backend --quiet session"
    command = (
        f"{cli} create {session} --raster {scene.image} --model {small_tile_model} >/dev/null && "
        f"{cli} click {session} --class 1 --pixel 40 40 >/dev/null && "
        f"{cli} retrain {session} --disca-steps 2 --device cpu; echo exit=$?; "
        f"ls -A {small_disk}/s.checkpoints; {cli} status {session}"
    )
    result = run_on_small_disk(small_disk, 900, command)  # room for the session, not a checkpoint
    assert "exit=2" in result.stdout, result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert errors == [errors[0]] and errors[0].startswith(
        f"error: not enough space in {small_disk}/s.checkpoints"
    )
    after = result.stdout.split("exit=2")[1].split("\n", 1)[1]
    assert after.splitlines() == [
        "iteration 0: start, 0 clicks, checkpoint -, mIoU - (current model)",
        "click 1: (40, 40) land, iteration 0, user",
    ]  # no round, no half-written checkpoint (the listing of s.checkpoints was empty)


# ---------------------------------------------------------------- big inputs announced


def test_a_mosaic_of_100000_squared_is_refused_up_front_when_it_cannot_fit(tmp_path, small_disk, fast_model):
    from tests.backend.test_hostile_inputs import huge_vrt

    small = write_raster(tmp_path / "small.tif", random_image(64, 64, seed=5))
    mosaic = huge_vrt(tmp_path / "mosaic.vrt", small, 100_000)
    command = (
        f"{sys.executable} -m backend --quiet predict {mosaic} --model {fast_model} --out {small_disk}/o"
    )
    result = run_on_small_disk(small_disk, 50_000, command)  # seconds, not the 37 hours it would take
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: not enough space in {small_disk}/o: the maps need about 42 GB, 49 MB free\n"
    )


def test_a_long_run_states_its_tiles_size_and_time_first(tmp_path, fast_model):
    from tests.backend.test_hostile_inputs import huge_vrt

    small = write_raster(tmp_path / "small.tif", random_image(64, 64, seed=5))
    mosaic = huge_vrt(tmp_path / "mosaic.vrt", small, 4096)  # 121 tiles
    result = run_cli("predict", mosaic, "--model", fast_model, "--out", tmp_path / "o", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes[0].startswith("note: 4096 × 4096 px: 121 tiles of 512 px on cpu; outputs about 72 MB in ")
    assert notes[0].endswith(" free)")
    # then, only when the run will take over a minute (this one's time depends on the machine),
    # the estimate measured on the second batch (its wording is tested with a fixed clock below)
    assert all(note.startswith("note: about ") for note in notes[1:]) and len(notes) <= 2


def test_the_duration_is_announced_from_the_first_batch(monkeypatch):
    from backend.predict import inference
    from backend.progress import Monitor

    said = []
    inference._announce_duration(Monitor(notify=said.append), 1.5, 2, 160)
    inference._announce_duration(Monitor(notify=said.append), 1.5, 2, 60)  # 45 s: nothing said
    assert said == [
        "about 2 min for 160 tiles (0.75 s per tile, measured on the second batch); it can be "
        "cancelled, and leaves nothing half-written"
    ]
