"""Building the network a card describes, and running it in the pieces the engine needs.

Every segmentation-models-pytorch architecture has ``encoder``, ``decoder`` and
``segmentation_head``; MC dropout uses that split to run the (deterministic) encoder once and only
the decoder once per stochastic pass.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UserError
from .card import ModelCard


def build_network(card: ModelCard) -> nn.Module:
    """An untrained network for ``card`` (never downloads weights)."""
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            card.architecture,
            encoder_name=card.encoder,
            encoder_weights=None,
            in_channels=card.in_channels,
            classes=card.n_classes,
            **card.architecture_kwargs,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(
            f"cannot build architecture '{card.architecture}' with encoder '{card.encoder}': {exc}"
        ) from None


def encode(network: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return list(network.encoder(x))


def decode(network: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """Logits from encoder features."""
    return network.segmentation_head(network.decoder(features))


class DropoutMasks:
    """Reproducible element-wise dropout masks for one tile's MC-dropout passes.

    Seeded by (seed, tile) so a tile's passes are the same whatever else is in the batch. On CPU
    masks come from numpy's PCG64 as bytes compared to a threshold (ten times faster than
    ``torch.rand``, whose cost rivalled the network's), so the rate is rounded to 1/256; on CUDA
    from torch's on-device generator.
    """

    def __init__(self, rate: float, seed: int, tile: int, device: torch.device):
        self.device = device
        self.threshold = round(rate * 256)
        self.rate = self.threshold / 256 if device.type == "cpu" else rate
        if device.type == "cpu":
            self.numpy = np.random.default_rng([seed, tile])
        else:
            self.torch = torch.Generator(device=device)
            self.torch.manual_seed(seed * 1_000_003 + tile)

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """0 where dropped, 1 / (1 - rate) where kept; shaped and laid out like ``like`` (1 × C × H × W)."""
        _, channels, height, width = like.shape
        if self.device.type == "cpu":
            raw = np.frombuffer(self.numpy.bytes(channels * height * width), dtype=np.uint8)
            keep = torch.from_numpy(raw.reshape(1, height, width, channels) >= self.threshold)
            keep = keep.permute(0, 3, 1, 2)  # channels-last, like the features
        else:
            keep = torch.rand(like.shape, generator=self.torch, device=self.device) >= self.rate
        return keep.to(like.dtype) / (1.0 - self.rate)


def dropout_features(features: list[torch.Tensor], masks: DropoutMasks) -> list[torch.Tensor]:
    """One stochastic copy of a sample's features (1 × C × H × W each).

    Dropout sits between every encoder stage and the decoder (DIAL's MC-dropout set-up); the
    first feature is the input image itself and is left alone.
    """
    return [features[0]] + [feature * masks.scale(feature) for feature in features[1:]]


def bfloat16_if_supported(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the device computes it natively (AVX-512 bf16 CPUs, recent GPUs), else None
    for float32: emulated bfloat16 would be slower than float32, not faster."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype``; None: off (float32)."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


PRECISIONS = ("auto", "fp32")


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast type of a prediction: with ``auto``, float16 on a GPU and bfloat16 on a CPU
    that computes it natively (the network 2.5× faster there, BENCHMARKS.md); None (float32) otherwise."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision}")
    if precision == "fp32":
        return None
    return torch.float16 if device.type == "cuda" else bfloat16_if_supported(device)


def freeze_batchnorm(network: nn.Module) -> None:
    """Keep BatchNorm statistics and affine parameters fixed (DISCA retraining on a few pixels)."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into it, for inference only.

    Same outputs (to float rounding), one layer fewer per pair: ~10 % faster on CPU. Pairs are
    recognised where the order is certain: consecutive modules of an ``nn.Sequential`` (smp's
    decoders) and the ``convN``/``bnN`` attributes of torchvision's ResNet blocks and stem (smp's
    ResNet encoders). Returns the number of folded pairs; other BatchNorms stay as they are.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    folded = sum(fold_batchnorm(child) for child in module.children())
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                transpose = isinstance(conv, nn.ConvTranspose2d)
                module._modules[first] = fuse_conv_bn_eval(conv, norm, transpose=transpose)
                module._modules[second] = nn.Identity()
                folded += 1
    if isinstance(module, (BasicBlock, Bottleneck, ResNet)):
        for suffix in ("", "1", "2", "3"):
            conv, norm = getattr(module, f"conv{suffix}", None), getattr(module, f"bn{suffix}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(module, f"conv{suffix}", fuse_conv_bn_eval(conv, norm))
                setattr(module, f"bn{suffix}", nn.Identity())
                folded += 1
    return folded


def softmax_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return F.softmax(logits.float() / temperature, dim=1)


class ConfidNet(nn.Module):
    """DIAL's ConfidNet head: transposed conv to 32 channels, 3 × 3 convs of 120, 64, 32 and 1
    channels, sigmoid; reads the last decoder features, outputs the model's confidence."""

    def __init__(self, in_channels: int = 32):
        super().__init__()
        widths = (32, 120, 64, 32)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_channels, widths[0], 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Confidence in [0, 1], B × 1 × H × W."""
        return torch.sigmoid(self.layers(features))


def features_and_logits(network: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last decoder features (ConfidNet's input) and the logits computed from them."""
    features = network.decoder(list(network.encoder(x)))
    return features, network.segmentation_head(features)


def decoder_channels(network: nn.Module) -> int:
    return network.segmentation_head[0].in_channels
