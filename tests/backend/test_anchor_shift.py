import copy

import torch

from backend.demo.scene import write_scene
from backend.io.clicks import Click
from backend.io.raster import RasterSource
from backend.learn.anchor_shift import share_ratios, shifted
from backend.learn.disca import Disca, DiscaSettings, anchor_from
from backend.model.bundle import load_bundle


def probabilities(*shares: float, size: int = 4) -> torch.Tensor:
    """Two crops whose every pixel holds the class probabilities ``shares``."""
    return torch.tensor(shares).view(1, -1, 1, 1).expand(2, -1, size, size).clone()


def test_a_class_the_map_lost_is_scaled_down_in_the_anchor_and_a_grown_one_is_not():
    initial, current = probabilities(0.9, 0.1, 0.0), probabilities(0.05, 0.65, 0.3)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    ratios = share_ratios(current, initial, valid)
    assert torch.allclose(ratios, torch.tensor([0.06 / 0.91, 1.0, 1.0]))  # grown classes stay at 1
    anchor = shifted(initial, ratios)[0, :, 0, 0]
    assert torch.allclose(anchor.sum(), torch.tensor(1.0))
    assert anchor[1] > anchor[0]  # the place keeps p₀'s second class, not the lost one
    assert anchor[2] == 0.0  # and never gains a class p₀ did not put there


def test_the_anchor_is_p0_itself_while_the_map_keeps_its_shares():
    initial = probabilities(0.5, 0.3, 0.2)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    assert torch.equal(share_ratios(initial, initial, valid), torch.ones(3))
    assert torch.allclose(shifted(initial, torch.ones(3)), initial)


def test_only_valid_pixels_count_toward_the_shares():
    initial, current = probabilities(0.9, 0.1), probabilities(0.9, 0.1)
    current[:, :, :2] = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)  # changed, but nodata there
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[:, :2] = False
    assert torch.equal(share_ratios(current, initial, valid), torch.ones(2))
    assert torch.equal(share_ratios(current, initial, valid & False), torch.ones(2))


def test_a_round_anchors_to_the_shifted_p0_only_when_asked(tmp_path, fast_model, monkeypatch):
    import backend.learn.disca as disca_module

    scene = write_scene(tmp_path, size=256, seed=5)
    bundle = load_bundle(fast_model)
    clicks = [Click(60, 60, 1), Click(180, 200, 2), Click(100, 190, 0)]
    calls: list[torch.Tensor] = []

    def recording(initial: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        calls.append(ratios)
        return shifted(initial, ratios)

    monkeypatch.setattr(disca_module, "shifted", recording)
    with RasterSource(scene.image, bundle.card.input) as source:
        for shift in (False, True):
            network = copy.deepcopy(bundle.network)
            settings = DiscaSettings(crop=128, steps=2, learning_rate=0.01, anchor_shift=shift)
            anchor = anchor_from(copy.deepcopy(bundle.network))
            Disca(network, bundle.card, anchor, torch.device("cpu"), settings).retrain(source, clicks)
            assert len(calls) == (2 if shift else 0)  # the click crops' p₀ and the held crops'
    assert calls[0].shape == (bundle.card.n_classes,) and (calls[0] <= 1).all() and (calls[0] > 0).all()


def test_the_command_line_and_sessions_made_before_it_set_the_shift():
    import argparse

    from backend.cli.options import add_disca_options, disca_settings
    from backend.session.settings import settings_from_meta, settings_to_meta

    parser = argparse.ArgumentParser()
    add_disca_options(parser)
    assert disca_settings(parser.parse_args(["--anchor-shift"])).anchor_shift
    assert not disca_settings(parser.parse_args(["--no-anchor-shift"])).anchor_shift
    meta = settings_to_meta(DiscaSettings(anchor_shift=True))
    assert settings_from_meta(meta).anchor_shift
    del meta["anchor_shift"]
    assert not settings_from_meta(meta).anchor_shift  # DIAL's anchor, as those rounds had
