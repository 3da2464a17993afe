"""``predict-many`` on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes
on 127.0.0.1, started here with the venv's ``dask``; and the CLI's default, a ``LocalCluster`` of
worker processes.

Every output is compared with a single-process ``predict`` of the same raster: classes exactly,
uncertainty to float rounding. The reference runs with one torch thread, as each worker does (a
convolution's last bits may depend on the thread count; the blend itself does not).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cluster.job import run_predict_many
from backend.cluster.parameters import ManyParameters
from backend.errors import UserError
from backend.predict.job import PredictParameters, run_predict
from tests.helpers import REPO, random_image, read_band, run_cli, write_raster

DASK = Path(sys.executable).parent / "dask"
BLOCK = 256  # with the small-tile model's 128-px patches


class DaskProcesses:
    """A scheduler and named workers, each its own process, as an operator would start them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.file = folder / "scheduler.json"
        self.env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.workers: dict[str, subprocess.Popen] = {}
        scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.file)]  # fmt: skip
        self.scheduler = self._start("scheduler", scheduler)
        deadline = time.time() + 60
        while not self.file.is_file() and time.time() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        from distributed import Client

        self.client = Client(self.address, timeout=30, set_as_default=False)

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - kept open while it runs
        return subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log)

    def start_worker(self, name: str, wrapper: tuple[str, ...] = (), script: str = "") -> subprocess.Popen:
        """``wrapper`` + ``sh -c "<script> <worker>"``: a worker in another environment."""
        worker = [str(DASK), "worker", "--scheduler-file", str(self.file), "--nthreads", "1",
                  "--nworkers", "1", "--no-nanny", "--name", name, "--memory-limit", "0",
                  "--death-timeout", "60"]  # fmt: skip
        if wrapper:
            worker = [*wrapper, "sh", "-c", f"{script} {shlex.join(worker)}"]
        self.workers[name] = self._start(name, worker)
        return self.workers[name]

    def names(self) -> dict[str, str]:
        """Worker name → address, as the scheduler sees them now."""
        return {w["name"]: a for a, w in self.client.scheduler_info()["workers"].items()}

    def wait_for(self, names: set[str], timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while set(self.names()) != names:
            assert time.time() < deadline, f"workers {sorted(self.names())}, expected {sorted(names)}"
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        process = self.workers.pop(name)
        process.send_signal(signal.SIGKILL)  # unshare and sh exec the worker: the same process
        process.wait(timeout=30)

    def idle(self, timeout: float = 60) -> None:
        """Until no worker is running a task (tasks left running by a dead client finish)."""
        deadline = time.time() + timeout
        while any(self.client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
            assert time.time() < deadline
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        for name in list(self.workers):
            self.kill(name)
        self.scheduler.terminate()
        self.scheduler.wait(timeout=30)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    assert DASK.is_file(), f"{DASK} is missing: install requirements.txt"
    processes = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        processes.start_worker("w0")
        processes.start_worker("w1")
        processes.wait_for({"w0", "w1"})
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    shapes = {"a": (200, 180), "b": (150, 220), "c": (240, 240), "big": (400, 400), "long": (768, 1024)}
    return {n: write_raster(folder / f"{n}.tif", random_image(h, w, seed=i)) for i, (n, (h, w)) in
            enumerate(shapes.items())}  # fmt: skip


@contextmanager
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def references(rasters, small_tile_model, tmp_path_factory):
    """Single-process ``predict`` of every raster: folder per name."""
    out = tmp_path_factory.mktemp("references")
    with one_torch_thread():
        for name, raster in rasters.items():
            run_predict(
                PredictParameters(raster=raster, out_dir=out / name, model_dir=small_tile_model, device="cpu")
            )
    return out


def patches(path: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT rank, patch_id, score, valid_fraction FROM patches ORDER BY rank"
        ).fetchall()


def assert_equals_predict(out: Path, name: str, references: Path) -> None:
    reference = references / name
    split = (out / name / "classes.vrt").is_file()
    classes = out / name / ("classes.vrt" if split else "classes.tif")
    uncertainty = out / name / ("uncertainty.vrt" if split else "uncertainty.tif")
    np.testing.assert_array_equal(read_band(classes), read_band(reference / "classes.tif"))
    np.testing.assert_allclose(read_band(uncertainty), read_band(reference / "uncertainty.tif"), atol=1e-5)
    got, expected = patches(out / name / "patches.gpkg"), patches(reference / "patches.gpkg")
    assert [p[:2] for p in got] == [p[:2] for p in expected]
    np.testing.assert_allclose([p[2:] for p in got], [p[2:] for p in expected], rtol=1e-6)


def many(inputs, out, model, address, block=BLOCK) -> ManyParameters:
    return ManyParameters(inputs=list(inputs), out_dir=out, model_dir=model, device="cpu", block=block,
                          scheduler=address)  # fmt: skip


def block_runs(folder: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in folder.glob("blocks/*/run.json")}


def test_a_batch_and_a_split_raster_equal_single_predict(
    dask_cluster, rasters, references, small_tile_model, tmp_path
):
    out = tmp_path / "out"
    inputs = [rasters[n] for n in ("a", "b", "c", "big")]
    report = run_predict_many(many(inputs, out, small_tile_model, dask_cluster.address))
    run = report.run
    assert run["blocks"] == {"total": 7, "computed": 7, "reused": 0}
    for name in ("a", "b", "c", "big"):
        assert_equals_predict(out, name, references)
    assert sorted(block_runs(out / "big")) == ["0-0", "0-1", "1-0", "1-1"]
    vrt = (out / "big" / "classes.vrt").read_text()
    assert 'relativeToVRT="1">blocks/0-0/classes.tif' in vrt  # the folder can be moved as it is
    for name in ("classes.qml", "uncertainty.qml", "patches.gpkg", "run.json"):
        assert (out / "big" / name).is_file()
    from osgeo import gdal

    block = gdal.Open(str(out / "big" / "blocks" / "0-0" / "uncertainty.tif"))
    assert block.GetMetadata("IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert block.GetRasterBand(1).GetOverviewCount() >= 1
    assert (out / "classes.vrt").is_file() and (out / "classes.qml").is_file()  # one mosaic over all
    tasks = run["tasks"]
    assert all(t["seconds"] > 0 and t["tiles"] > 0 and t["address"].startswith("tcp://") for t in tasks)
    loads = [t["pid"] for t in tasks if t["model_loaded"]]
    assert len(loads) == len(set(loads)) <= 2  # once per worker at most, never per task


def test_a_killed_worker_does_not_stop_the_run(dask_cluster, rasters, references, small_tile_model, tmp_path):
    out = tmp_path / "out"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["run"] = run_predict_many(
                many([rasters["long"]], out, small_tile_model, dask_cluster.address)
            ).run
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline and thread.is_alive():
        busy = {a: keys for a, keys in dask_cluster.client.processing().items() if keys}
        if block_runs(out / "long") and busy:
            names = {a: n for n, a in dask_cluster.names().items()}
            address = next(iter(busy))
            victim, running = names[address], busy[address]
            dask_cluster.kill(victim)  # SIGKILL, mid-task
            killed_at = time.time()
        time.sleep(0.02)
    thread.join(timeout=180)
    assert victim is not None, "the run ended before a worker could be killed"
    assert "error" not in outcome, outcome.get("error")
    run = outcome["run"]
    assert run["blocks"]["computed"] == 12
    assert_equals_predict(out, "long", references)
    assert not list(out.rglob(".sial-block-*"))  # the killed worker's staging folder is cleared
    lost = {key.split("-", 2)[2].rsplit("-", 1)[0] for key in running}  # sial-long-<row>-<col>-<run>
    final = {t["block"]: t for t in run["tasks"]}
    # What the killed worker held ran again on the other one (unless it had just finished).
    assert all(final[b]["address"] != address or final[b]["finished"] < killed_at for b in lost)
    dask_cluster.start_worker(victim)
    dask_cluster.wait_for({"w0", "w1"})


def test_a_rerun_after_a_killed_client_computes_only_the_missing_blocks(
    dask_cluster, rasters, references, small_tile_model, tmp_path
):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "backend", "--quiet", "predict-many", str(rasters["long"]), "--model",
               str(small_tile_model), "--out", str(out), "--block", str(BLOCK), "--device", "cpu",
               "--scheduler", dask_cluster.address]  # fmt: skip
    client = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(block_runs(out / "long")) < 2:
        assert client.poll() is None and time.time() < deadline, (
            "the run ended before it could be interrupted"
        )
        time.sleep(0.02)
    client.kill()
    client.wait()
    dask_cluster.idle()  # the tasks running when the client died may still finish
    before = {label: path.stat().st_mtime_ns for label, path in block_runs(out / "long").items()}
    assert 2 <= len(before) < 12
    assert not (out / "run.json").exists() and not (out / "long" / "run.json").exists()

    run = run_predict_many(many([rasters["long"]], out, small_tile_model, dask_cluster.address)).run
    computed = {t["block"] for t in run["tasks"] if t["status"] == "computed"}
    reused = {t["block"] for t in run["tasks"] if t["status"] == "reused"}
    assert reused == set(before) and len(computed) == 12 - len(before) and not computed & reused
    assert {
        label: path.stat().st_mtime_ns for label, path in block_runs(out / "long").items() if label in before
    } == before
    assert_equals_predict(out, "long", references)


def test_a_cancelled_run_keeps_its_finished_blocks_and_the_next_one_resumes(
    dask_cluster, rasters, references, small_tile_model, tmp_path
):
    """Cancel (the QGIS task's button, Ctrl-C) once a block is in: what was done stays done."""
    from backend.errors import Cancelled
    from backend.progress import Monitor

    out = tmp_path / "out"
    params = many([rasters["long"]], out, small_tile_model, dask_cluster.address)
    with pytest.raises(Cancelled):
        run_predict_many(params, Monitor(cancelled=lambda: bool(block_runs(out / "long"))))
    dask_cluster.idle()  # blocks already running when it was cancelled may still come in
    done = set(block_runs(out / "long"))
    assert 1 <= len(done) < 12 and not (out / "run.json").exists()
    run = run_predict_many(params).run
    assert {t["block"] for t in run["tasks"] if t["status"] == "reused"} == done
    assert run["blocks"] == {"total": 12, "computed": 12 - len(done), "reused": len(done)}
    assert_equals_predict(out, "long", references)
    assert not list(out.rglob(".sial-*-*-*"))  # no staging folder left behind


def test_workers_that_cannot_see_an_input_stop_the_run_before_any_task(
    dask_cluster, small_tile_model, tmp_path
):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    raster = write_raster(hidden / "only-here.tif", random_image(64, 64))
    namespaces = ("-m",) if os.geteuid() == 0 else ("-r", "-m")
    probe = subprocess.run(["unshare", *namespaces, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    # A worker whose file system hides the folder, as a worker on another machine would.
    dask_cluster.start_worker("blind", ("unshare", *namespaces), f"mount -t tmpfs tmpfs {hidden} && exec")
    try:
        dask_cluster.wait_for({"w0", "w1", "blind"})
        out = tmp_path / "out"
        with pytest.raises(UserError, match=rf"cannot see {re.escape(str(raster))}.*same paths"):
            run_predict_many(many([raster], out, small_tile_model, dask_cluster.address))
        assert not out.exists()
    finally:
        dask_cluster.kill("blind")
        dask_cluster.wait_for({"w0", "w1"})


def test_an_unreachable_scheduler_is_one_error_line_within_seconds(rasters, small_tile_model, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = tmp_path / "out"
    started = time.perf_counter()
    result = run_cli("predict-many", rasters["a"], "--model", small_tile_model, "--out", out,
                     "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "2")  # fmt: skip
    assert time.perf_counter() - started < 30  # interpreter and torch start-up included
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler"), result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "raster not found"),
        ("block", "not a multiple of the patch size"),
        ("foreign", "which this program did not write"),
        ("empty-folder", "holds no raster"),
        ("other-gsd", r"0\.5-m pixels and the model reads 2-m ones: predict-many does not resample"),
    ],
)
def test_bad_input_is_refused_before_any_work(case, message, rasters, small_tile_model, tmp_path):
    out = tmp_path / "out"
    inputs, block, model = [rasters["a"]], BLOCK, small_tile_model
    if case == "missing":
        inputs = [tmp_path / "nothing.tif"]
    elif case == "block":
        block = 300
    elif case == "foreign":
        (out / "a").mkdir(parents=True)
        (out / "a" / "classes.tif").write_text("mine")
    elif case == "other-gsd":  # predict resamples such a raster; predict-many refuses it
        import dataclasses

        from backend.model.bundle import create_bundle, save_bundle
        from tests.helpers import make_card

        card = make_card(tile=128, overlap=32)
        card = card.with_updates(input=dataclasses.replace(card.input, gsd_m=2.0))
        model = tmp_path / "coarse-model"
        save_bundle(create_bundle(card, seed=0), model, dtype="float32")
    else:
        (tmp_path / "empty").mkdir()
        inputs = [tmp_path / "empty"]
    before = sorted(p.name for p in out.rglob("*")) if out.exists() else None
    with pytest.raises(UserError, match=message):
        run_predict_many(many(inputs, out, model, "tcp://127.0.0.1:1", block))  # never reached
    assert (sorted(p.name for p in out.rglob("*")) if out.exists() else None) == before


def test_inputs_are_files_folders_globs_and_vrts_never_the_outputs(tmp_path):
    from backend.cluster.inputs import discover_inputs, output_names

    for folder in ("tiles/deeper", "out/a"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("tiles/a.tif", "tiles/b.TIF", "tiles/notes.txt", "tiles/deeper/a.tif", "mosaic.vrt",
                 "out/a/classes.tif"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "out"
    found = discover_inputs(
        [tmp_path / "tiles", str(tmp_path / "tiles" / "**" / "*.tif"), tmp_path / "mosaic.vrt",
         str(tmp_path / "**" / "classes.tif"), tmp_path / "tiles" / "a.tif"], out,
    )  # fmt: skip
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "tiles/a.tif", "tiles/b.TIF", "tiles/deeper/a.tif", "mosaic.vrt"
    ]  # fmt: skip
    names = output_names(found)
    assert names[1] == "b" and names[3] == "mosaic"
    assert names[0].startswith("a-") and names[2].startswith("a-") and names[0] != names[2]
    assert output_names(found) == names  # stable, so a rerun finds its blocks again
    with pytest.raises(UserError, match="every match lies inside the output folder"):
        discover_inputs([str(out / "*" / "*.tif")], out)


def side_by_side(folder: Path, seed: int) -> Path:
    """A VRT mosaic of two 200 × 300 rasters that touch: one 200 × 600 raster, split in 3 blocks."""
    from affine import Affine
    from osgeo import gdal

    from tests.helpers import UTM

    parts = []
    for i in range(2):
        transform = UTM * Affine.translation(300 * i, 0)
        parts.append(write_raster(folder / f"part-{i}.tif", random_image(200, 300, seed=seed + i),
                                  transform=transform))  # fmt: skip
    gdal.BuildVRT(str(folder / "mosaic.vrt"), [str(p) for p in parts]).FlushCache()
    return folder / "mosaic.vrt"


def test_the_cli_on_a_local_cluster_equals_predict_and_a_rerun_starts_no_cluster(
    rasters, references, small_tile_model, tmp_path
):
    """The default: a LocalCluster of worker processes started here (two, one torch thread each)."""
    mosaic = side_by_side(tmp_path, seed=20)
    with one_torch_thread():
        run_predict(
            PredictParameters(
                raster=mosaic, out_dir=references / "mosaic", model_dir=small_tile_model, device="cpu"
            )
        )
    out = tmp_path / "out"
    pattern = str(rasters["a"].parent / "[ab].tif")
    command = ("predict-many", pattern, mosaic, "--model", small_tile_model, "--out", out, "--block", BLOCK,
               "--device", "cpu", "--workers", 2)  # fmt: skip
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert "3 input(s), 5 block(s): 5 computed, 0 already done, on local: 2 worker(s)" in result.stdout
    for name in ("a", "b", "mosaic"):
        assert_equals_predict(out, name, references)
    run = json.loads((out / "run.json").read_text())
    assert run["cluster"]["local"] and run["cluster"]["torch_threads"] == {"127.0.0.1": 1}
    assert len({t["pid"] for t in run["tasks"]}) <= 2 and all(t["seconds"] > 0 for t in run["tasks"])
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr
    assert "5 block(s): 0 computed, 5 already done, on no cluster" in again.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--block", "300"), "not a multiple of the patch size"),
        (
            ("--acquisition", "mcdropout", "--mc-passes", "0"),
            "number of MC dropout passes must be at least 1",
        ),
        (("--batch-size", "-1"), "batch size must be at least 1"),
    ],
)
def test_bad_input_through_the_cli_is_one_error_line(extra, message, rasters, small_tile_model, tmp_path):
    out = tmp_path / "out"
    result = run_cli("predict-many", rasters["a"], "--model", small_tile_model, "--out", out, *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists()
