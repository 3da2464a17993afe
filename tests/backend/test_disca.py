import copy
from dataclasses import asdict

import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.io.clicks import Click
from backend.io.raster import RasterSource
from backend.learn.click_crops import crop_origins
from backend.learn.disca import Disca, DiscaSettings, anchor_from
from backend.model.bundle import load_bundle
from tests.helpers import plain_probabilities


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("disca"), size=384, seed=3)


def wrong_clicks(network, card, source, n=6, seed=0):
    """Clicks whose class differs from what the network predicts there."""
    p = plain_probabilities(network, card, source)
    predicted = p.argmax(0)
    rng = np.random.default_rng(seed)
    clicks = []
    for row, col in rng.integers(40, 344, (n, 2)):
        wrong = (predicted[row, col] + 1 + rng.integers(0, card.n_classes - 1)) % card.n_classes
        clicks.append(Click(int(row), int(col), int(wrong)))
    return clicks


def retrained(bundle, source, clicks, **settings):
    network = copy.deepcopy(bundle.network)
    anchor = anchor_from(copy.deepcopy(bundle.network))
    disca = Disca(network, bundle.card, anchor, torch.device("cpu"), DiscaSettings(crop=128, **settings))
    report = disca.retrain(source, clicks)
    return network, report


def clicked_error(network, card, source, clicks):
    p = plain_probabilities(network, card, source)
    ce = np.mean([-np.log(p[c.class_id, c.row, c.col] + 1e-12) for c in clicks])
    right = np.mean([p[:, c.row, c.col].argmax() == c.class_id for c in clicks])
    return ce, right


@pytest.mark.parametrize("loss,rate", [("ce", 0.02), ("ewdl", 0.1)])  # Dice's gradients are smaller
def test_disca_lowers_the_error_at_the_clicked_pixels(scene, fast_model, loss, rate):
    bundle = load_bundle(fast_model)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source)
        before = clicked_error(bundle.network, bundle.card, source, clicks)
        network, report = retrained(  # the click term as DIAL defines it: a mean over the clicks
            bundle, source, clicks, steps=15, learning_rate=rate, click_loss=loss, anchor_weight=1.0,
            class_balance=0.0,
        )  # fmt: skip
        after = clicked_error(network, bundle.card, source, clicks)
    assert before[1] == 0.0  # every click starts wrong
    assert after[1] >= 0.5  # at least half of them are now right
    assert after[0] < before[0] * 0.9  # and the clicked classes are more likely everywhere clicked
    assert report.steps == 15 and report.clicks == 6 and len(report.losses) == 15


def test_the_anchor_keeps_far_pixels_closer_to_the_initial_prediction(scene, fast_model):
    bundle = load_bundle(fast_model)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source, n=4, seed=1)
        initial = plain_probabilities(bundle.network, bundle.card, source)
        rows, cols = np.mgrid[0:384, 0:384]
        far = np.ones((384, 384), dtype=bool)
        for c in clicks:
            far &= (rows - c.row) ** 2 + (cols - c.col) ** 2 > 40**2
        changes = {}
        for weight in (0.0, 5.0):
            network, _ = retrained(
                bundle, source, clicks, steps=10, learning_rate=0.02, anchor_weight=weight, seed=3
            )
            changes[weight] = np.abs(plain_probabilities(network, bundle.card, source) - initial)[
                :, far
            ].mean()
    assert far.mean() > 0.5
    assert changes[5.0] < changes[0.0]


def test_batchnorm_statistics_stay_frozen(scene, fast_model):
    bundle = load_bundle(fast_model)
    stats = {k: v.clone() for k, v in bundle.network.state_dict().items() if "running" in k}
    with RasterSource(scene.image, bundle.card.input) as source:
        network, _ = retrained(bundle, source, [Click(100, 100, 2)], steps=3, learning_rate=0.05)
    after = network.state_dict()
    assert all(torch.equal(stats[k], after[k]) for k in stats)
    assert not network.training and not any(p.requires_grad for p in network.parameters())


def test_crops_follow_the_newest_clicks_and_stay_inside():
    clicks = [Click(5, 5, 0), Click(10, 12, 1), Click(300, 380, 2), Click(310, 390, 3)]
    origins = crop_origins(clicks, 400, 400, 128, limit=8)
    assert origins == [(246, 272), (0, 0)]  # newest first, shifted inside; nearby clicks share a crop
    assert crop_origins(clicks, 400, 400, 128, limit=1) == [(246, 272)]


def test_dial_settings_and_validation():
    dial = DiscaSettings.dial()
    assert (dial.steps, dial.learning_rate, dial.anchor_weight) == (10, 2e-6, 1.0)
    with pytest.raises(UserError, match="click loss"):
        DiscaSettings(click_loss="focal").check()
    with pytest.raises(UserError, match="learning rate"):
        DiscaSettings(learning_rate=0).check()


def test_each_step_trains_on_the_newest_crop_and_a_replay_of_older_ones(fast_model):
    from backend.learn.click_crops import clicks_in

    bundle = load_bundle(fast_model)
    settings = DiscaSettings(max_crops=3, replay=64)
    disca = Disca(bundle.network, bundle.card, lambda x: x, torch.device("cpu"), settings)
    generator = torch.Generator().manual_seed(0)
    picks = [disca._pick(10, generator).tolist() for _ in range(40)]
    assert all(p[0] == 0 and len(set(p)) == 3 for p in picks)  # the newest crop, every step
    assert set().union(*map(set, picks)) == set(range(10))  # every older crop comes back
    assert disca._pick(2, generator).tolist() == [0, 1]
    index = torch.tensor([[0, 5, 6], [1, 7, 8], [2, 9, 9], [2, 1, 1]])
    classes = torch.tensor([4, 3, 2, 1])
    picked, picked_classes = clicks_in(torch.tensor([2, 0]), index, classes, 3)
    assert picked.tolist() == [[1, 5, 6], [0, 9, 9], [0, 1, 1]] and picked_classes.tolist() == [4, 2, 1]
    with pytest.raises(UserError, match="crops per step"):
        DiscaSettings(max_crops=10, replay=4).check()


def test_held_crops_can_be_switched_off(scene, fast_model):
    bundle = load_bundle(fast_model)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source, n=2)
        _, with_held = retrained(bundle, source, clicks, steps=2, learning_rate=0.01, anchor_crops=2)
        _, without = retrained(bundle, source, clicks, steps=2, learning_rate=0.01, anchor_crops=0)
    assert len(without.losses) == len(with_held.losses) == 2
    assert without.anchor_losses != with_held.anchor_losses  # the held crops change the anchor term


def test_the_click_term_balances_the_clicked_classes_as_asked():
    """Three clicks of class 0 and one of class 1: at balance 1 the lone click weighs as much as
    the three together, at 0.5 as much as √3 of them, at 0 as much as one (DIAL's mean)."""
    from backend.learn.losses import click_cross_entropy

    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([[0, 0, 0], [0, 1, 1], [0, 2, 2], [0, 3, 3]])
    classes = torch.tensor([0, 0, 0, 1])
    per_click = torch.nn.functional.cross_entropy(
        logits[0, :, index[:, 1], index[:, 2]].T, classes, reduction="none"
    )
    assert torch.isclose(click_cross_entropy(logits, index, classes), per_click.mean())
    balanced = click_cross_entropy(logits, index, classes, balance=1.0)
    assert torch.isclose(balanced, (per_click[:3].mean() + per_click[3]) / 2)
    halfway = click_cross_entropy(logits, index, classes, balance=0.5)
    assert torch.isclose(halfway, (per_click[:3].sum() / 3**0.5 + per_click[3]) / (3**0.5 + 1))
    assert DiscaSettings().class_balance == 0.5 and DiscaSettings.dial().class_balance == 0.0
    with pytest.raises(UserError, match="between 0 and 1"):
        DiscaSettings(class_balance=2.0).check()


def test_a_session_from_before_the_balance_exponent_keeps_its_rounds():
    from backend.session.settings import settings_from_meta

    old = {"kind": "disca", **{k: v for k, v in asdict(DiscaSettings()).items() if k != "class_balance"}}
    assert settings_from_meta({**old, "balance_classes": True}).class_balance == 1.0
    assert settings_from_meta({**old, "balance_classes": False}).class_balance == 0.0


def test_spread_clicks_label_their_superpixels_inside_each_crop(scene, fast_model):
    """With ``spread`` the click term covers each click's superpixel: many more pixels, every one
    inside its crop, the click's class, the clicks themselves among them; the guard keeps only
    the clicks. Off (DIAL's settings), the targets are the clicks alone."""
    bundle = load_bundle(fast_model)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source, n=3)
        settings = DiscaSettings(crop=128, spread=True)
        disca = Disca(
            copy.deepcopy(bundle.network),
            bundle.card,
            anchor_from(bundle.network),
            torch.device("cpu"),
            settings,
        )
        _, _, _, index, classes = disca._batch(source, clicks)
        spread_index, spread_classes = disca._spread(source, clicks, index, classes)
        plain = Disca(
            bundle.network,
            bundle.card,
            anchor_from(bundle.network),
            torch.device("cpu"),
            DiscaSettings(crop=128, spread=False),
        )
        assert plain._spread(source, clicks, index, classes)[0] is index
        _, report = retrained(bundle, source, clicks, steps=2, learning_rate=0.01, spread=True)
        _, plain_report = retrained(bundle, source, clicks, steps=2, learning_rate=0.01, spread=False)
    assert len(spread_index) > 20 * len(index)
    assert int(spread_index[:, 1:].min()) >= 0 and int(spread_index[:, 1:].max()) < 128
    assert set(map(tuple, index.tolist())) <= set(map(tuple, spread_index.tolist()))
    assert set(spread_classes.tolist()) == {c.class_id for c in clicks}
    assert report.click_losses != plain_report.click_losses
    assert report.check.clicks == plain_report.check.clicks  # the guard counts the clicks alone
    assert DiscaSettings().spread and not DiscaSettings.dial().spread


def test_the_command_line_sets_the_spread_the_guard_and_the_class_balance():
    import argparse

    from backend.cli.options import add_disca_options, disca_settings

    parser = argparse.ArgumentParser()
    add_disca_options(parser)
    default = disca_settings(parser.parse_args([]))
    off = disca_settings(parser.parse_args(["--no-spread", "--no-guard"]))
    assert default.spread and default.guard and not off.spread and not off.guard
    assert not disca_settings(parser.parse_args(["--dial-settings"])).spread
    assert not disca_settings(parser.parse_args([]), off).spread  # a session keeps its last round's
    assert disca_settings(parser.parse_args(["--spread"]), off).spread  # until told otherwise
    assert disca_settings(parser.parse_args(["--guard"]), off).guard
    balanced = disca_settings(parser.parse_args(["--class-balance", "1"]), off)
    assert balanced.class_balance == 1.0 and not balanced.spread and default.class_balance == 0.5


def test_a_round_takes_its_steps_by_its_new_clicks(scene, fast_model):
    auto = DiscaSettings()
    assert auto.steps is None and [auto.steps_for(n) for n in (1, 4, 5, 20)] == [10, 10, 5, 5]
    # the first clicks of all: two steps a click, until the rule's count is reached
    assert [auto.steps_for(1, total) for total in (1, 2, 4, 5, 6)] == [2, 4, 8, 10, 10]
    assert auto.steps_for(2, 2) == 4 and auto.steps_for(5, 5) == 5
    assert DiscaSettings(steps=3).steps_for(20) == 3 == DiscaSettings(steps=3).steps_for(1, 1)
    assert auto.crop is None and [auto.crop_for(n) for n in (1, 4, 5, 20)] == [256, 256, 128, 128]
    assert DiscaSettings(crop=64).crop_for(20) == 64 == DiscaSettings(crop=64).crop_for(1)
    bundle = load_bundle(fast_model)
    quick = {
        "crop": 64,
        "max_crops": 2,
        "replay": 8,
        "anchor_crops": 1,
        "guard": False,
        "learning_rate": 0.01,
    }
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source, n=7, seed=2)
        anchor = anchor_from(copy.deepcopy(bundle.network))
        disca = Disca(bundle.network, bundle.card, anchor, torch.device("cpu"), DiscaSettings(**quick))
        first = disca.retrain(source, clicks[:1])  # the first click of all: two steps
        batch = disca.retrain(source, clicks[:5], new_clicks=5)  # the dock's pattern: a batch, then a round
        single = disca.retrain(source, clicks[:6])  # DIAL's: one click, then a round
        told = disca.retrain(source, clicks, new_clicks=5)
    assert (first.steps, batch.steps, single.steps, told.steps) == (2, 5, 10, 5)
    assert len(batch.losses) == 5 and len(single.losses) == 10


def test_a_batch_round_trains_on_smaller_crops_and_a_single_click_round_on_larger(scene, fast_model):
    """The crop side follows the round's new clicks; the anchors p₀ cached for one side are not
    reused for the other (a crop's anchor is of its own size)."""
    bundle = load_bundle(fast_model)
    settings = DiscaSettings(steps=1, max_crops=2, replay=8, anchor_crops=1, guard=False, learning_rate=0.01)
    with RasterSource(scene.image, bundle.card.input) as source:
        clicks = wrong_clicks(bundle.network, bundle.card, source, n=6, seed=4)
        anchor = anchor_from(copy.deepcopy(bundle.network))
        disca = Disca(bundle.network, bundle.card, anchor, torch.device("cpu"), settings)
        disca.retrain(source, clicks[:5])
        sides = {tuple(p.shape[-2:]) for p in disca._anchors.values()}
        disca.retrain(source, clicks)  # one new click: 256 px crops around the same places
        after = {tuple(p.shape[-2:]) for p in disca._anchors.values()}
    assert sides == {(128, 128)} and after == {(128, 128), (256, 256)}
