"""The session's network and where its weights come from.

The starting weights are the model bundle's (or another session's checkpoint: sequential
adaptation), then one checkpoint per retraining round (:mod:`.checkpoints`). ``current`` is
the round whose weights the network holds: the newest intact one. The DISCA anchor p₀ comes from
the starting weights and never changes. ``round_weights`` are the current round's own weights
when the network holds their average with earlier rounds' (:mod:`backend.learn.weight_average`):
the next DISCA round continues from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import RasterSource
from ..learn.disca import Disca, RetrainReport, anchor_from
from ..learn.prior_shift import PriorShift
from ..learn.weight_average import State, copy_state, same_weights
from ..model.bundle import load_bundle
from ..progress import Monitor
from .checkpoints import checkpoint_name, checkpoint_problem, load_state, save_state
from .rounds import disca_round, sial_round
from .settings import RoundSettings, SialSettings
from .store import Iteration


class SessionWeights:
    def __init__(
        self, model_dir: Path, starting_weights: Path | None, checkpoints: Path, device: torch.device
    ):
        self.model_dir, self.starting_weights = model_dir, starting_weights
        self.checkpoints, self.device = checkpoints, device
        self.bundle = load_bundle(model_dir)
        anchor = load_bundle(model_dir).network
        if starting_weights is not None:
            load_state(anchor, starting_weights)
        self._anchor_network = anchor.to(device)
        self.bundle.network.to(device)
        self._disca: Disca | None = None
        self.current: Iteration | None = None
        self.round_weights: State | None = None  # None: no round yet (the starting weights)

    def restore(self, records: Sequence[Iteration], damaged: Callable[[str], UserError]) -> list[str]:
        """Load the newest round whose checkpoint is intact; returns what the user should know.

        A missing or damaged checkpoint (its SHA-256 differs from the one recorded when it was
        written) is reported and skipped, down to the starting weights (the first row, which has
        no checkpoint). Rounds pruned on purpose are skipped quietly.
        """
        skipped = []
        for record in reversed(records):
            if record.pruned:
                continue
            problem = checkpoint_problem(self.checkpoints, record)
            if problem is None:
                break
            skipped.append(f"round {record.iteration}'s checkpoint {record.checkpoint} {problem}")
        else:  # the first row (the starting weights) has no checkpoint: only an edited table
            raise damaged("none of its rounds has intact weights")
        self.load(record)
        if not skipped:
            return []
        using = f"round {record.iteration}" if record.checkpoint else "the starting weights"
        return [f"{'; '.join(skipped)}: the model is {using}, the newest intact round"]

    def load(self, record: Iteration) -> None:
        network = self.bundle.network
        own = None
        if record.checkpoint:
            own = load_state(network, self.checkpoints / record.checkpoint)
        elif self.starting_weights is not None:
            load_state(network, self.starting_weights)
        else:
            network.load_state_dict(load_bundle(self.model_dir).network.state_dict())
        network.to(self.device).eval()
        # after a round, its own weights: stored beside the average, or the network's (no average yet)
        self.round_weights = (own or copy_state(network)) if record.checkpoint else None
        self.current = record

    def key(self) -> str:
        """Identifies the current weights (for the prediction cache)."""
        assert self.current is not None
        return self.current.sha256 or f"{self.bundle.card.weights_sha256}:{self.starting_weights}"

    def prior(self) -> PriorShift | None:
        """The class-prior correction the current weights carry (a SIAL round may leave one)."""
        assert self.current is not None
        details = json.loads(self.current.details or "{}")
        return PriorShift.from_json(details["prior_shift"]) if details.get("prior_shift") else None

    def train(
        self,
        settings: RoundSettings,
        source: RasterSource,
        clicks: Sequence[Click],
        iteration: int,
        new_clicks: int,
        monitor: Monitor | None,
    ) -> tuple[str, RetrainReport]:
        """One round in memory, then its checkpoint ``round-<iteration>`` (none, ``""``, for a
        round the guard rolled back); on any failure the network goes back to the current round's
        weights, untouched."""
        assert self.current is not None
        network, own = self.bundle.network, None
        try:
            if isinstance(settings, SialSettings):
                first = iteration == 1
                report = sial_round(
                    self.bundle, self.device, settings, source, clicks, self.prior(), first, monitor
                )
            else:
                engine = self._disca_engine(settings)
                engine.average.round_weights = self.round_weights
                report = disca_round(engine, settings, source, clicks, new_clicks, self.prior(), monitor)
                own = engine.average.round_weights  # the round's own weights, when averaged
            if not report.kept:  # the guard rolled it back: nothing to keep
                return "", report
            name = checkpoint_name(iteration)
            apart = own is not None and not same_weights(own, network.state_dict())
            save_state(network, self.checkpoints / name, own if apart else None)
            self.round_weights = own or copy_state(network)
        except BaseException:
            self.load(self.current)
            raise
        return name, report

    def _disca_engine(self, settings: RoundSettings) -> Disca:
        if self._disca is None:
            anchor = anchor_from(self._anchor_network)
            self._disca = Disca(self.bundle.network, self.bundle.card, anchor, self.device, settings)
        return self._disca
