"""The map after a round comes from the rounds' weights averaged, not from the last round's alone.

A DISCA round is a few SGD steps on a handful of clicks: on imagery the model has never seen,
one round's weights swing with the clicks it happened to get (Dubai tile 2 fell 20 points at one
click and stayed there five). The network that draws the map holds an exponential average of
the rounds' own weights, ``β · previous average + (1 − β) · this round's``, while SGD carries on
from the round's own weights, so the average smooths the swings; it can slow the first clicks
on some images (Tanzania at seed 0: 66.9 after 10 clicks against 74.7).
At twice the learning rate (2e-4) it let the clicks teach more: after 25 clicks (20 on LoveDA and
Tanzania) over Dubai tiles 2 and 6, LoveDA crops 0–2 and Tanzania, seeds 0 and 1
(docs/experiments/weight-average-across-rounds.md). Over five seeds on one machine LoveDA is
level with the rounds' own weights at 1e-4 (43.2 against 44.4) and Tanzania gains (BENCHMARKS.md).

The first round has nothing to average with: the starting weights are the analyst's starting map,
which the anchor term already holds.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]
ROUND_PREFIX = "round/"
"""Where a session checkpoint keeps the round's own weights beside the averaged ones."""


def copy_state(network: nn.Module) -> State:
    return {name: value.detach().clone() for name, value in network.state_dict().items()}


def same_weights(a: State, b: State) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


class WeightAverage:
    """The rounds' own weights (``round_weights``) beside the averaged ones the network holds.

    ``round_weights`` is None before the first round (the network holds the starting weights)
    and with ``beta`` 0 (the network holds the rounds' own weights)."""

    def __init__(self, beta: float):
        self.beta = beta
        self.round_weights: State | None = None

    def before_round(self, network: nn.Module) -> State | None:
        """Puts the round's own weights into ``network`` for SGD to continue from; returns the
        averaged weights it held (None: they were the rounds' own), for :meth:`after_round`."""
        if self.round_weights is None or self.beta == 0:
            return None
        shown = copy_state(network)
        network.load_state_dict(self.round_weights)
        return shown

    def after_round(self, network: nn.Module, shown: State | None, kept: bool) -> None:
        """``network`` holds the round's own weights (or, ``kept`` False, the ones before it):
        records them and leaves in ``network`` the average (or, rolled back, the previous one)."""
        if not kept:
            if shown is not None:
                network.load_state_dict(shown)
            return
        if self.beta == 0:
            self.round_weights = None
            return
        own = copy_state(network)
        if shown is not None:  # in place: β · shown + (1 − β) · own; counters stay the round's
            with torch.no_grad():
                for name, value in network.state_dict().items():
                    if value.is_floating_point():
                        value.lerp_(shown[name], self.beta)
        self.round_weights = own
