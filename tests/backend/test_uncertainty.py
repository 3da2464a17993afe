import math

import pytest
import torch

from backend.model.bundle import create_bundle
from backend.model.network import softmax_probabilities
from backend.predict.uncertainty import Acquisition, margin_uncertainty, normalized_entropy, run_network
from tests.helpers import make_card


def test_entropy_is_zero_for_certainty_one_for_a_uniform_guess_and_in_between_otherwise():
    certain = torch.tensor([1.0, 0, 0, 0, 0])[:, None, None]
    uniform = torch.full((5, 1, 1), 0.2)
    mixed = torch.tensor([0.7, 0.3, 0, 0, 0])[:, None, None]
    assert normalized_entropy(certain).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_entropy(uniform).item() == pytest.approx(1.0, abs=1e-6)
    expected = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / math.log(5)
    assert normalized_entropy(mixed).item() == pytest.approx(expected, rel=1e-5)


def test_margin_is_one_minus_the_gap_between_the_two_best_classes():
    p = torch.tensor([0.5, 0.3, 0.2])[:, None, None]
    assert margin_uncertainty(p).item() == pytest.approx(0.8)
    assert margin_uncertainty(torch.tensor([1.0, 0, 0])[:, None, None]).item() == pytest.approx(0.0)


@pytest.fixture(scope="module")
def network():
    bundle = create_bundle(make_card(), seed=1)
    for p in bundle.network.parameters():
        p.requires_grad_(False)
    return bundle.network.eval()


def inputs(seed=0, batch=2, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, size, size, generator=g)


@pytest.mark.parametrize("name", ["entropy", "margin"])
def test_plain_acquisitions_return_the_network_softmax(network, name):
    x = inputs()
    probabilities, extra = run_network(network, x, Acquisition(name), [0, 1], 3)
    assert extra is None
    with torch.inference_mode():
        torch.testing.assert_close(probabilities, softmax_probabilities(network(x)))


def test_mc_dropout_is_in_range_reproducible_per_tile_and_independent_of_the_batch(network):
    acquisition = Acquisition("mcdropout", mc_passes=5, mc_rate=0.1)
    x = inputs(batch=3)
    probabilities, uncertainty = run_network(network, x, acquisition, [10, 11, 12], 3)
    assert uncertainty.shape == (3, 1, 64, 64)
    assert uncertainty.min() >= 0.0 and uncertainty.max() <= 1.0 and uncertainty.max() > 0
    _, again = run_network(network, x[1:2], acquisition, [11], 3)
    torch.testing.assert_close(again[0], uncertainty[1])
    _, other_tile = run_network(network, x[1:2], acquisition, [99], 3)
    assert not torch.equal(other_tile[0], uncertainty[1])
    # The class probabilities are the deterministic network's, whatever the acquisition.
    with torch.inference_mode():
        torch.testing.assert_close(probabilities, softmax_probabilities(network(x)), atol=1e-5, rtol=1e-4)


def test_mc_dropout_without_dropout_has_no_uncertainty(network):
    _, uncertainty = run_network(network, inputs(), Acquisition("mcdropout", mc_rate=0.0), [0, 1], 3)
    assert uncertainty.abs().max() < 1e-6


def test_odin_perturbation_raises_the_predicted_class_score(network):
    acquisition = Acquisition("odin", odin_temperature=100.0, odin_epsilon=0.01)
    x = inputs()
    probabilities, uncertainty = run_network(network, x, acquisition, [0, 1], 3)
    assert uncertainty.min() >= 0.0 and uncertainty.max() <= 1.0
    with torch.inference_mode():
        clean = softmax_probabilities(network(x), 100.0).amax(dim=1, keepdim=True)
    clean_uncertainty = (1 - clean) / (1 - 1 / 5)
    # ODIN moves the input towards the predicted class: less uncertain on average.
    assert uncertainty.mean() < clean_uncertainty.mean()
    with torch.inference_mode():
        torch.testing.assert_close(probabilities, softmax_probabilities(network(x)), atol=1e-5, rtol=1e-4)


def test_dropout_masks_drop_at_the_rate_rescale_and_repeat_per_tile():
    from backend.model.network import DropoutMasks

    like = torch.empty(1, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    masks = DropoutMasks(0.1, seed=0, tile=7, device=torch.device("cpu"))
    scale = masks.scale(like)
    dropped = (scale == 0).float().mean().item()
    assert dropped == pytest.approx(26 / 256, abs=0.002)  # 0.1 rounded to 1/256
    assert torch.allclose(scale[scale > 0], torch.tensor(1 / (1 - 26 / 256)))
    assert scale.is_contiguous(memory_format=torch.channels_last)
    again = DropoutMasks(0.1, seed=0, tile=7, device=torch.device("cpu")).scale(like)
    other = DropoutMasks(0.1, seed=0, tile=8, device=torch.device("cpu")).scale(like)
    assert torch.equal(scale, again) and not torch.equal(scale, other)
