"""The engine's acquisition functions as the dock offers them: names, what they measure, what a
full prediction with each costs, and how their heatmap is scaled.

Entropy and margin lie in [0, 1] and mean the same on every raster, so their heatmap spans 0–1.
MC dropout, ODIN and ConfidNet have no such common scale (MC dropout's values average about
0.01 on the bundled model): their heatmap spans the map's 2nd to 98th percentile, which the
engine writes into the map's style (``uncertainty.qml``) and the dock reads from there. The
legend shows the values either way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AcquisitionInfo:
    key: str
    label: str
    tooltip: str
    cost: float  # a full prediction's time, relative to entropy's
    fixed_range: bool  # heatmap 0–1 (else the map's 2nd–98th percentile)


_ALL = (
    AcquisitionInfo(
        "entropy",
        "Entropy",
        "How evenly the model spreads its belief over the classes (0: sure of one class, 1: no idea). "
        "Heatmap 0–1.",
        cost=1.0,
        fixed_range=True,
    ),
    AcquisitionInfo(
        "margin",
        "Margin (best two classes)",
        "How close the two likeliest classes are (1: a tie). Heatmap 0–1.",
        cost=1.0,
        fixed_range=True,
    ),
    AcquisitionInfo(
        "mcdropout",
        "MC dropout (5 passes)",
        "How much five predictions with dropout disagree: five times the work of entropy. "
        "Heatmap: the map's 2nd–98th percentile.",
        cost=5.0,
        fixed_range=False,
    ),
    AcquisitionInfo(
        "odin",
        "ODIN",
        "The softmax after a small input perturbation and temperature scaling: about three times the "
        "work of entropy. Heatmap: the map's 2nd–98th percentile.",
        cost=3.0,
        fixed_range=False,
    ),
    AcquisitionInfo(
        "confidnet",
        "ConfidNet (the model's error predictor)",
        "1 − the confidence that a ConfidNet head, trained with the model, predicts. Heatmap: the map's "
        "2nd–98th percentile.",
        cost=1.2,
        fixed_range=False,
    ),
)
ACQUISITIONS = {a.key: a for a in _ALL}
NO_CONFIDNET = "This model has no ConfidNet head (train one with `python -m backend confidnet MODEL`)."


def label(key: str) -> str:
    return ACQUISITIONS[key].label if key in ACQUISITIONS else key


def short_label(key: str) -> str:
    """The label without its explanation in brackets: "MC dropout", "ConfidNet"."""
    return label(key).split(" (")[0]
