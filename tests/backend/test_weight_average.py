"""The rounds' weight average: what the network holds after each round, in memory and in a
session's checkpoints, through Undo and reopening."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.learn.weight_average import ROUND_PREFIX, WeightAverage, copy_state
from backend.session.session import Session
from backend.session.settings import settings_from_meta, settings_to_meta

AVERAGED = DiscaSettings(steps=3, learning_rate=0.01, crop=128, guard=False, weight_average=0.5)


def set_weight(network: torch.nn.Linear, value: float) -> None:
    with torch.no_grad():
        network.weight.fill_(value)
        network.bias.fill_(-value)


def test_the_network_holds_the_rounds_average_and_sgd_continues_from_the_rounds_own():
    network, average = torch.nn.Linear(2, 1), WeightAverage(0.5)
    assert average.before_round(network) is None  # no round yet: nothing to average with
    set_weight(network, 1.0)  # round 1's SGD
    average.after_round(network, None, kept=True)
    assert network.weight.eq(1.0).all()  # the first round is its own average

    shown = average.before_round(network)
    assert shown is not None and network.weight.eq(1.0).all()
    set_weight(network, 3.0)  # round 2's SGD, from round 1's own weights
    average.after_round(network, shown, kept=True)
    assert network.weight.eq(2.0).all() and network.bias.eq(-2.0).all()
    assert average.round_weights is not None and average.round_weights["weight"].eq(3.0).all()

    shown = average.before_round(network)
    assert network.weight.eq(3.0).all()  # SGD continues from round 2's own weights
    set_weight(network, 3.0)  # round 3 rolled back: the guard put round 2's own weights back
    average.after_round(network, shown, kept=False)
    assert network.weight.eq(2.0).all() and average.round_weights["weight"].eq(3.0).all()

    shown = average.before_round(network)
    set_weight(network, 7.0)
    average.after_round(network, shown, kept=True)
    assert network.weight.eq(4.5).all()  # 0.5 · 2 + 0.5 · 7


def test_without_the_average_the_network_holds_each_rounds_own_weights():
    network, average = torch.nn.Linear(2, 1), WeightAverage(0.0)
    for value in (1.0, 3.0):
        shown = average.before_round(network)
        set_weight(network, value)
        average.after_round(network, shown, kept=True)
        assert shown is None and average.round_weights is None and network.weight.eq(value).all()


def test_the_average_must_be_below_one():
    with pytest.raises(UserError, match="weight average"):
        DiscaSettings(weight_average=1.0).check()
    assert DiscaSettings.dial().weight_average == 0.0


def test_sessions_made_before_the_average_keep_each_rounds_own_weights():
    meta = settings_to_meta(DiscaSettings())
    assert settings_from_meta(meta).weight_average == 0.5
    del meta["weight_average"]
    assert settings_from_meta(meta).weight_average == 0.0


def test_a_sessions_checkpoints_keep_the_rounds_own_weights_through_undo_and_reopening(
    tmp_path, small_tile_model
):
    scene = write_scene(tmp_path, size=256, seed=3)
    path = tmp_path / "average.gpkg"
    session = Session.create(path, scene.image, small_tile_model, "cpu", settings=AVERAGED)
    session.add_click(40, 50, 1)
    session.add_click(200, 180, 3)
    session.retrain()
    round_1 = copy_state(session.bundle.network)
    stored = load_file(str(session.current_checkpoint()))
    assert not any(name.startswith(ROUND_PREFIX) for name in stored)  # the same weights: not twice

    session.add_click(120, 60, 2)
    session.retrain()
    own_2 = session.weights.round_weights
    assert own_2 is not None
    shown_2 = copy_state(session.bundle.network)
    for name, value in shown_2.items():  # the first round is its own average
        if value.is_floating_point():
            assert torch.allclose(value, 0.5 * round_1[name] + 0.5 * own_2[name], atol=1e-6), name
    assert any(not torch.equal(shown_2[n], own_2[n]) for n in shown_2)
    stored = load_file(str(session.current_checkpoint()))
    assert all(torch.equal(stored[ROUND_PREFIX + n], own_2[n].cpu()) for n in own_2)
    session.close()

    reopened = Session.open(path, "cpu")  # both weight sets from disk
    assert all(torch.equal(reopened.bundle.network.state_dict()[n], shown_2[n]) for n in shown_2)
    assert all(torch.equal(reopened.weights.round_weights[n], own_2[n]) for n in own_2)
    reopened.add_click(30, 220, 0)
    reopened.retrain()
    assert reopened.undo() == "undid retraining round 3"
    assert all(torch.equal(reopened.bundle.network.state_dict()[n], shown_2[n]) for n in shown_2)
    assert all(torch.equal(reopened.weights.round_weights[n], own_2[n]) for n in own_2)
    assert reopened.undo() == "removed click 4"
    assert reopened.undo() == "undid retraining round 2"
    assert all(torch.equal(reopened.bundle.network.state_dict()[n], round_1[n]) for n in round_1)
    assert all(torch.equal(reopened.weights.round_weights[n], round_1[n]) for n in round_1)
    reopened.close()
