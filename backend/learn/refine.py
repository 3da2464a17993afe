"""Refining a prediction with a set of clicks in one go (batch use: Processing, scripts).

AC only: predict with the clicks as input channels. AC + DISCA: first retrain the network on
the clicks for a number of rounds (anchored to the model's own initial prediction), then predict
with the clicks as channels, and optionally keep the adapted model as a bundle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError
from ..io.clicks import read_clicks
from ..io.raster import RasterSource
from ..model.bundle import load_bundle, save_bundle
from ..predict.job import PredictParameters, PredictReport, run_predict
from ..progress import Monitor
from ..system.runtime import resolve_device
from .disca import Disca, DiscaSettings, anchor_from


@dataclass
class RefineParameters:
    raster: Path
    model_dir: Path
    clicks: Path
    out_dir: Path
    rounds: int = 0  # DISCA rounds before predicting; 0 = AC only
    settings: DiscaSettings = field(default_factory=DiscaSettings)
    acquisition: str = "entropy"
    device: str = "auto"
    adapted_model: Path | None = None


def run_refine(params: RefineParameters, monitor: Monitor | None = None) -> PredictReport:
    monitor = monitor or Monitor()
    bundle = load_bundle(params.model_dir)
    device = resolve_device(params.device)
    with RasterSource(params.raster, bundle.card.input) as source:
        loaded = read_clicks(params.clicks, source.info, bundle.card)
        if loaded.outside:
            monitor.report(0.0, loaded.describe_outside() + " — skipped")
        if not loaded.clicks:
            raise UserError(f"no click of {params.clicks} lies on the raster")
        if params.rounds > 0:
            bundle.network.to(device)
            disca = Disca(
                bundle.network,
                bundle.card,
                anchor_from(copy.deepcopy(bundle.network)),
                device,
                params.settings,
            )
            for round_index in range(params.rounds):
                start = 0.6 * round_index / params.rounds
                part = monitor.scaled(start, start + 0.6 / params.rounds)
                disca.retrain(source, loaded.clicks, part, new_clicks=len(loaded.clicks))  # one batch
    if params.adapted_model is not None:
        provenance = dict(bundle.card.provenance)
        provenance["adapted"] = {
            "from_model": bundle.card.name,
            "clicks": len(loaded.clicks),
            "rounds": params.rounds,
        }
        card = bundle.card.with_updates(name=f"{bundle.card.name}-adapted", provenance=provenance)
        adapted = replace(bundle, card=card, directory=None)  # the ConfidNet head travels with it
        save_bundle(adapted, params.adapted_model, dtype="float32")
    start = 0.6 if params.rounds else 0.0
    return run_predict(
        PredictParameters(
            raster=params.raster,
            out_dir=params.out_dir,
            bundle=bundle,
            click_list=loaded.clicks,
            acquisition=params.acquisition,
            device=str(device),
        ),
        monitor.scaled(start, 1.0),
    )
