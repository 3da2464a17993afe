"""One retraining round of a session, the DISCA way or the SIAL way (see :mod:`.settings`).

Both compute only: the new weights end in the network, and the session writes the checkpoint
and records the round (:meth:`backend.session.session.Session.commit_round`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.clicks import Click
from ..io.raster import RasterSource
from ..learn.disca import Disca, DiscaSettings, RetrainReport
from ..learn.prior_shift import PriorShift
from ..learn.sparse_training import SparseTrainer, window_probabilities
from ..learn.superpixels import SparseLabels, expand_clicks
from ..model.bundle import ModelBundle
from ..predict.held_classes import classes_to_hold_on
from ..progress import Monitor
from .settings import RoundSettings, SialSettings


@dataclass(frozen=True)
class TrainedRound:
    """A retraining round computed but not yet recorded."""

    iteration: int
    checkpoint: str  # "": the round guard rolled it back, and nothing is recorded
    clicks: int
    report: RetrainReport
    held_classes: tuple[int, ...] = ()  # kept off the map after the round (predict/held_classes.py)


def classes_the_round_holds(
    settings: RoundSettings, classes_map: Path, clicks: Sequence[Click], n_classes: int
) -> tuple[int, ...]:
    """What the round about to run keeps off the map (:mod:`..predict.held_classes`): for a
    DISCA round that holds classes, from the map before it; none for a SIAL round, whose network
    starts from nothing."""
    if not getattr(settings, "hold_classes", False):
        return ()
    return classes_to_hold_on(classes_map, clicks, n_classes)


def disca_round(
    disca: Disca,
    settings: DiscaSettings,
    source: RasterSource,
    clicks: Sequence[Click],
    new_clicks: int,
    prior: PriorShift | None,
    monitor: Monitor | None,
) -> RetrainReport:
    """DIAL's DISCA: a few steps on the clicks, anchored to the session's first prediction.

    It fine-tunes around a SIAL round's class-prior correction: that stays in the bias, and
    stays recorded so that the next SIAL round can take it out."""
    disca.settings = settings
    report = disca.retrain(source, clicks, monitor, new_clicks)
    report.prior_shift = prior.to_json() if prior is not None else None
    return report


def sial_round(
    bundle: ModelBundle,
    device: torch.device,
    settings: SialSettings,
    source: RasterSource,
    clicks: Sequence[Click],
    prior: PriorShift | None,
    first_round: bool,
    monitor: Monitor | None,
) -> RetrainReport:
    """SIAL's way: every click so far (optionally spread over its superpixel) as sparse ground
    truth, EWDL or cross-entropy, no anchor: for a network that starts from nothing. The sieve
    (the model disputing an expanded label) waits for a model that has learnt something."""
    started = time.perf_counter()
    if settings.expansion is not None:
        sieve = None if first_round else window_probabilities(bundle.network, bundle.card, source, device)
        labels = expand_clicks(source, clicks, settings.expansion, sieve)
    else:
        labels = SparseLabels.from_clicks(clicks)
    trainer = SparseTrainer(bundle.network, bundle.card, device, settings.training)
    trainer.prior = prior  # taken out before training on, put back after
    losses = trainer.fit([(source, labels)], monitor)
    for parameter in bundle.network.parameters():
        parameter.requires_grad_(False)
    seconds = time.perf_counter() - started
    correction = trainer.prior.to_json() if trainer.prior is not None else None
    return RetrainReport(len(losses), len(labels), len(clicks), seconds, losses, prior_shift=correction)
