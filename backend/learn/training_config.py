"""A training run's settings, from its JSON config (see configs/): data, network, schedule,
augmentation. Everything that defines a run is here and recorded in the bundle's provenance."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..io.grid import TOLERANCE
from ..model.bundle import CARD_FILE
from ..model.card import ClassInfo, ClickEncoding, InputSpec, ModelCard, Normalization, Tiling


@dataclass
class TrainingConfig:
    name: str
    classes: list[tuple[str, str]]  # (name, #rrggbb), in index order
    train: list[tuple[str, str]]  # (image, labels) raster pairs
    validation: list[tuple[str, str]] = field(default_factory=list)
    class_map: dict[int, int] | None = None  # label value → class index (others ignored)
    description: str = ""
    training_data: str = ""
    licence: str = ""
    gsd_m: float | None = None
    gsd_estimate: str = ""  # how gsd_m was found, for imagery that does not say (the model card shows it)
    architecture: str = "Linknet"
    encoder: str = "resnet34"
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    crop: int = 256
    batch_size: int = 8
    steps: int = 12000
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    click_probability: float = 0.5  # share of crops that get simulated clicks (DIAL)
    max_clicks: int = 20
    click_radius: int = 10
    scale_range: tuple[float, float] = (0.75, 1.33)
    colour_jitter: float = 0.15
    hue_degrees: float = 0.0  # other sensors and places (crops.style_randomise); 0 = none
    saturation: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    dice_weight: float = 1.0
    validate_every: int = 1000
    checkpoint_every: int = 250
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    initialise_from: str | None = None  # a bundle whose weights start this run (transfer learning)

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"training config not found: {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        try:
            config = cls(**data)
        except TypeError as exc:
            raise UserError(f"{path}: {exc}") from None
        config.classes = [tuple(c) for c in config.classes]  # type: ignore[misc]
        config.train = [tuple(p) for p in config.train]  # type: ignore[misc]
        config.validation = [tuple(p) for p in config.validation]  # type: ignore[misc]
        config.scale_range = tuple(config.scale_range)  # type: ignore[assignment]
        if config.class_map is not None:
            config.class_map = {int(k): int(v) for k, v in config.class_map.items()}
        config.check()
        return config

    def check(self) -> None:
        if len(self.classes) < 2:
            raise UserError("a model needs at least two classes")
        if not self.train:
            raise UserError("no training rasters ('train' is empty)")
        for image, labels in [*self.train, *self.validation]:
            for path in (image, labels):
                if not Path(path).is_file():
                    raise UserError(f"training data not found: {path}")
        if self.crop % 32 or self.crop < 64:
            raise UserError(f"crop must be a multiple of 32, at least 64 (not {self.crop})")
        pair = list(self.scale_range)
        if len(pair) != 2 or not all(isinstance(v, int | float) for v in pair) or not 0 < pair[0] <= pair[1]:
            raise UserError(f"scale_range must be two positive numbers, low ≤ high, not {pair}")
        for key in ("colour_jitter", "hue_degrees", "saturation", "blur_sigma", "noise_std"):
            if getattr(self, key) < 0:
                raise UserError(f"{key} must not be negative, not {getattr(self, key)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError("precision must be auto, bf16 or fp32")
        if self.initialise_from is not None and not (Path(self.initialise_from) / CARD_FILE).is_file():
            raise UserError(f"initialise_from: no model bundle at {self.initialise_from}")

    def gsd_range(self) -> tuple[float, float] | None:
        """The pixel sizes the zoomed crops showed the network: a crop of ``crop × s`` source
        pixels is seen at ``crop`` pixels, so at ``gsd_m × s`` metres a pixel. Only a range wider
        than the grid's own tolerance says more than ``gsd_m`` does."""
        if self.gsd_m is None:
            return None
        low, high = self.scale_range
        if low >= 1 / (1 + TOLERANCE) and high <= 1 + TOLERANCE:
            return None
        return round(self.gsd_m * min(low, 1.0), 4), round(self.gsd_m * max(high, 1.0), 4)

    def card(self) -> ModelCard:
        n = len(self.bands)
        return ModelCard(
            name=self.name,
            description=self.description,
            classes=tuple(ClassInfo(i, name, colour) for i, (name, colour) in enumerate(self.classes)),
            architecture=self.architecture,
            encoder=self.encoder,
            input=InputSpec(
                bands=tuple(self.bands),
                band_names=tuple(("red", "green", "blue")[:n])
                if n <= 3
                else tuple(f"band {b}" for b in self.bands),
                dtype="uint8",
                gsd_m=self.gsd_m,
                gsd_range_m=self.gsd_range(),
                normalization=Normalization(
                    method="fixed",
                    min=(0.0,) * n,
                    max=(255.0,) * n,
                    mean=tuple(self.mean),
                    std=tuple(self.std),
                ),
            ),
            clicks=ClickEncoding(enabled=True, radius=self.click_radius),
            tiling=Tiling(512, 128),
        )
