"""AdaBN (learn/adabn.py): BatchNorm statistics re-estimated on the target raster, nothing else,
the same every time; a session made with --adapt-statistics works on such a copy of the model."""

import copy
import json

import numpy as np
import pytest
import torch

from backend.io.raster import RasterSource
from backend.learn.adabn import adapt_batchnorm
from backend.model.bundle import load_bundle
from backend.session.session import Session
from tests.helpers import random_image, run_cli, write_raster


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("adabn") / "r.tif", random_image(300, 340, seed=4))


def adapted(bundle, raster, **options):
    network = copy.deepcopy(bundle.network)
    with RasterSource(raster, bundle.card.input) as source:
        report = adapt_batchnorm(network, bundle.card, source, **options)
    return network, report


def test_only_the_batchnorm_statistics_change_and_always_the_same_way(fast_model, raster):
    bundle = load_bundle(fast_model)
    first, report = adapted(bundle, raster, crops=8, size=128)
    second, _ = adapted(bundle, raster, crops=8, size=128)
    assert report.crops == 8 and report.size == 128
    original = bundle.network.state_dict()
    changed = set()
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name  # deterministic
        if not torch.equal(value, original[name]):
            changed.add(name.rsplit(".", 1)[1])
    assert changed == {"running_mean", "running_var", "num_batches_tracked"}
    for name, parameter in first.named_parameters():
        assert torch.equal(parameter, dict(bundle.network.named_parameters())[name])
    other, _ = adapted(bundle, raster, crops=8, size=128, seed=1)  # other crops, other statistics
    means = [n for n in first.state_dict() if n.endswith("running_mean")]
    assert any(not torch.equal(other.state_dict()[n], first.state_dict()[n]) for n in means)
    norms = [m for m in first.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 and not m.training for m in norms)  # left as they were


def test_a_raster_with_no_valid_crop_is_refused(fast_model, tmp_path):
    mask = np.zeros((200, 200), dtype=bool)
    mask[:20, :20] = True
    path = write_raster(tmp_path / "empty.tif", random_image(200, 200), mask=mask)
    bundle = load_bundle(fast_model)
    with pytest.raises(Exception, match="no 128-px crop that is at least half valid"):
        adapted(bundle, path, crops=4, size=128)


def test_a_session_made_with_adapted_statistics_works_on_its_own_copy(fast_model, raster, tmp_path):
    session = tmp_path / "s.gpkg"
    result = run_cli(
        "session", "create", session, "--raster", raster, "--model", fast_model, "--adapt-statistics"
    )
    assert result.returncode == 0, result.stderr
    copy_dir = tmp_path / "s-model"
    card = json.loads((copy_dir / "model.json").read_text())
    assert card["provenance"]["adapted_statistics"]["raster"] == str(raster.resolve())
    assert card["provenance"]["adapted_statistics"]["crops"] == 64
    with Session.open(session, writer=False) as s:
        assert s.model_dir == copy_dir.resolve()
    again = run_cli(
        "session",
        "create",
        tmp_path / "s.gpkg",
        "--raster",
        raster,
        "--model",
        fast_model,
        "--adapt-statistics",
    )
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "already exists" in again.stderr
    sial = run_cli(
        "session",
        "create",
        tmp_path / "t.gpkg",
        "--raster",
        raster,
        "--sial",
        "--classes",
        "a,b",
        "--adapt-statistics",
    )
    assert sial.returncode == 2 and "--adapt-statistics adapts a trained model" in sial.stderr


def test_a_raster_smaller_than_a_crop_is_padded_to_what_the_network_takes(fast_model, tmp_path):
    path = write_raster(tmp_path / "small.tif", random_image(77, 70, seed=1))
    _, report = adapted(load_bundle(fast_model), path, crops=4, size=256)
    assert report.crops == 4 and report.size == 256  # crops of 96 px (77 rounded up to 32s)
