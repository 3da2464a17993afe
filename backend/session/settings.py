"""What a session's retraining rounds do: DISCA refines a trained model, SIAL rounds train a
network from the clicks alone. Both are stored in the session (``settings_to_meta``) and read
back (``settings_from_meta``); a round picks its trainer by the settings' ``KIND``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..learn.disca import DiscaSettings
from ..learn.sparse_training import SparseSettings
from ..learn.superpixels import ExpansionSettings


@dataclass(frozen=True)
class SialSettings:
    """Session rounds the SIAL way (see :mod:`backend.session.rounds`), for a network trained
    from clicks alone; ``DiscaSettings`` refine a trained one."""

    KIND: ClassVar[str] = "sial"
    training: SparseSettings = field(default_factory=lambda: SparseSettings(steps=300))
    expansion: ExpansionSettings | None = None

    @classmethod
    def recommended(cls) -> SialSettings:
        """What the Dubai benchmarks found best (docs/experiments/sial-setups.md, set-ups 2–4):
        cross-entropy, each click spread over its SLIC superpixel with the sieve, the weights'
        moving average; 300 steps of 128-px crops keep a round near a minute on a CPU."""
        return cls(SparseSettings(steps=300, loss="ce", average=0.998), ExpansionSettings())

    def check(self) -> None:
        self.training.check()
        if self.expansion is not None:
            self.expansion.check()


RoundSettings = DiscaSettings | SialSettings


def settings_to_meta(settings: RoundSettings) -> dict[str, Any]:
    return {"kind": settings.KIND, **asdict(settings)}


def settings_from_meta(data: dict[str, Any]) -> RoundSettings:
    data = dict(data)
    if data.pop("kind", "disca") != "sial":
        if "balance_classes" in data:  # sessions made before the exponent: every class the same, or the mean
            data["class_balance"] = 1.0 if data.pop("balance_classes") else 0.0
        data.setdefault("weight_average", 0.0)  # sessions made before it: each round's own weights
        return DiscaSettings(**data)
    expansion = data.get("expansion")
    return SialSettings(
        training=SparseSettings(**data["training"]),
        expansion=ExpansionSettings(**expansion) if expansion else None,
    )


def settings_of_last_round(records: Sequence[Any]) -> RoundSettings | None:
    """A reopened session trains on as its last round did (the creation settings are only the
    first round's), unless that round's record is from an incompatible version."""
    for record in reversed(records):
        settings = json.loads(record.details or "{}").get("settings")
        if settings:
            try:
                return settings_from_meta({"kind": "sial" if "training" in settings else "disca", **settings})
            except (TypeError, ValueError, AttributeError):
                return None
    return None


def settings_or_damaged(store: Any, data: Any) -> RoundSettings:
    """The settings a session's metadata records, or ``store.damaged`` saying they are not valid."""
    try:
        return settings_from_meta(dict(data))
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise store.damaged(f"its retraining settings are not valid ({exc})") from None
