import copy

import pytest
import torch
from torch import nn

from backend.model.bundle import create_bundle
from backend.model.network import fold_batchnorm
from backend.system.runtime import tune_allocator
from tests.helpers import make_card


@pytest.mark.parametrize("encoder,expected", [("resnet34", 51), ("resnet18", 35)])
def test_folding_batchnorm_keeps_the_outputs_and_removes_every_batchnorm(encoder, expected):
    network = create_bundle(make_card(encoder=encoder), seed=2).network.eval()
    # Non-trivial statistics, as a trained network has.
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    folded = copy.deepcopy(network)
    assert fold_batchnorm(folded) == expected
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 8, 128, 128)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x).softmax(1), network(x).softmax(1), atol=1e-5, rtol=1e-4)


def test_folding_leaves_batchnorms_it_cannot_place():
    """A BatchNorm after a ReLU has no convolution to fold into."""
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    assert fold_batchnorm(block) == 0
    assert isinstance(block[2], nn.BatchNorm2d)


def test_allocator_tuning_is_accepted_by_glibc():
    assert tune_allocator() is True
