"""The round guard (learn/round_check.py): a round that gets more of the analyst's clicks wrong
is rolled back, in DISCA, sessions and the CLI; one that wears a class away far from every click
comes with a warning."""

import copy

import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.io.clicks import Click
from backend.io.raster import RasterSource
from backend.learn.disca import Disca, DiscaSettings, anchor_from
from backend.learn.round_check import CHECK_CROPS, FAR, RoundCheck, far_origins, judge_round
from backend.model.bundle import load_bundle
from backend.session.session import Session
from tests.helpers import plain_probabilities, run_cli


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("guard"), size=512, seed=5)


def check(**changes):
    values = dict(clicks=10, wrong_before=1, wrong_after=1, changed_far=0.1, worst_class=3, worst_loss=0.2)
    return RoundCheck(**(values | changes))


def test_the_verdict_follows_the_clicks_and_the_far_away_map():
    assert judge_round(check()).kept
    assert judge_round(check(wrong_after=0)).kept
    worse = judge_round(check(wrong_after=2))
    assert not worse.kept and "2 of your 10 clicks wrong" in worse.reason and "before it 1" in worse.reason
    assert judge_round(check()).warning is None
    worn = judge_round(check(worst_loss=0.7))  # kept (it is often right), with a warning
    assert worn.kept and "70% of 'class 3'" in worn.warning
    named = judge_round(check(worst_loss=0.7), ["building", "land", "road", "vegetation", "water"])
    assert "70% of 'vegetation' away" in named.warning


def test_the_whole_map_check_counts_clicks_and_far_changes():
    before = np.zeros((600, 600), dtype=np.uint8)
    before[:, 300:] = 3
    after = before.copy()
    after[:, 450:] = 1  # half of class 3 is gone, far from the click
    after[10, 10] = 2  # the click's pixel is now wrong
    measured = RoundCheck.of(before, after, [Click(10, 10, 0)])
    assert (measured.wrong_before, measured.wrong_after) == (0, 1)
    assert measured.worst_class == 3 and measured.worst_loss == pytest.approx(0.5, abs=0.02)


def test_far_crops_keep_clear_of_every_click():
    generator = torch.Generator().manual_seed(0)
    clicks = [Click(500, 500, 1), Click(1500, 200, 2)]
    origins = far_origins(clicks, 2048, 2048, 256, generator)
    assert len(origins) == CHECK_CROPS
    for row, col in origins:
        for c in clicks:
            assert not (row - FAR <= c.row < row + 256 + FAR and col - FAR <= c.col < col + 256 + FAR)
    assert far_origins([Click(100, 100, 1)], 300, 300, 256, generator) == []  # no room


def _disca(bundle, **settings):
    network = copy.deepcopy(bundle.network)
    anchor = anchor_from(copy.deepcopy(bundle.network))
    return network, Disca(
        network, bundle.card, anchor, torch.device("cpu"), DiscaSettings(crop=128, **settings)
    )


def right_clicks(bundle, source, n=4):
    """Clicks of classes other than 0 where the network already predicts them (none wrong)."""
    predicted = plain_probabilities(bundle.network, bundle.card, source, size=512).argmax(0)
    rows, cols = np.nonzero(predicted[40:-40, 40:-40] > 0)
    pick = np.linspace(0, len(rows) - 1, n).astype(int)
    return [
        Click(int(r) + 40, int(c) + 40, int(predicted[r + 40, c + 40]))
        for r, c in zip(rows[pick], cols[pick], strict=True)
    ]


def test_a_wrecking_round_is_rolled_back_exactly(scene, fast_model):
    """A learning rate that blows the weights up: the clicks, right before, are wrong after."""
    bundle = load_bundle(fast_model)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = right_clicks(bundle, source)
        network, disca = _disca(bundle, learning_rate=1e6, steps=4)
        report = disca.retrain(source, clicks)
        assert report.check.wrong_after > report.check.wrong_before, report.check
        assert not report.kept and "round was not kept" in report.verdict.reason
        for name, value in bundle.network.state_dict().items():
            assert torch.equal(value, network.state_dict()[name]), name  # the weights before it
        unguarded, disca = _disca(bundle, learning_rate=1e6, steps=4, guard=False)
        report = disca.retrain(source, clicks)
        assert report.verdict is None and report.kept
        assert any(
            not torch.equal(v, unguarded.state_dict()[n]) for n, v in bundle.network.state_dict().items()
        )


def test_a_rolled_back_session_round_leaves_no_trace(scene, fast_model, tmp_path):
    path = tmp_path / "s.gpkg"
    with Session.create(path, scene.image, fast_model) as session:
        for i, (row, col) in enumerate(((60, 80), (300, 400), (450, 120), (200, 250))):
            session.add_click(row, col, i % 2)
    result = run_cli(
        "session", "retrain", path, "--disca-lr", "3", "--anchor-weight", "0", "--disca-steps", "8"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("round not kept: the retrained map gets"), result.stdout
    with Session.open(path, writer=False) as session:
        assert session.iteration == 0 and [r.kind for r in session.iterations()] == ["start"]
    assert not any(path.with_suffix(".checkpoints").glob("round-*"))
