"""The model card: everything ``model.json`` says about a bundle (the bundle contract).

A card is plain data. :mod:`backend.model.bundle` reads and writes it next to the weights;
:mod:`backend.model.network` builds the network it describes.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import UserError

FORMAT = "sial-model-bundle"
FORMAT_VERSION = 1
NORMALIZATION_METHODS = ("fixed", "percentile")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassInfo:
    index: int
    name: str
    color: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16)


@dataclass(frozen=True)
class Normalization:
    """How raw raster values become network input.

    ``fixed`` maps ``min..max`` (per band, in raster units) to 0..1; ``percentile`` stretches each
    band's ``percentiles`` (measured on the raster itself) to 0..1. Both then apply
    ``(v - mean) / std``. A raster whose data type differs from the card's ``dtype`` is stretched by
    percentiles even under ``fixed``, because a fixed range for uint8 means nothing for uint16.
    """

    method: str = "fixed"
    min: tuple[float, ...] = (0.0, 0.0, 0.0)
    max: tuple[float, ...] = (255.0, 255.0, 255.0)
    percentiles: tuple[float, float] = (2.0, 98.0)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class InputSpec:
    bands: tuple[int, ...] = (1, 2, 3)  # 1-based raster bands, in network order
    band_names: tuple[str, ...] = ("red", "green", "blue")
    dtype: str = "uint8"
    gsd_m: float | None = None  # ground sampling distance of the training data, metres
    # The pixel sizes (metres) the training's zoomed crops covered: a raster within them is read
    # as it is (io/grid.py). None: gsd_m alone.
    gsd_range_m: tuple[float, float] | None = None
    normalization: Normalization = field(default_factory=Normalization)


@dataclass(frozen=True)
class ClickEncoding:
    """Clicks enter the network as one channel per class (DIAL's annotations as channels).

    Each click is a cone ``max(0, 1 - d / radius)`` of the Euclidean distance ``d`` in pixels:
    DIAL's distance transform of a ``radius``-pixel disk, scaled to 0..1.
    """

    enabled: bool = True
    encoding: str = "distance_transform"
    radius: int = 10


@dataclass(frozen=True)
class Tiling:
    tile_size: int = 512
    overlap: int = 128


@dataclass(frozen=True)
class ModelCard:
    name: str
    classes: tuple[ClassInfo, ...]
    version: str = "0.1.0"
    description: str = ""
    architecture: str = "Linknet"
    encoder: str = "resnet34"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    clicks: ClickEncoding = field(default_factory=ClickEncoding)
    tiling: Tiling = field(default_factory=Tiling)
    mc_dropout_rate: float = 0.1
    weights_file: str = "model.safetensors"
    weights_dtype: str = "float16"
    weights_sha256: str = ""
    confidnet_file: str = ""  # optional ConfidNet head (see backend/learn/confidnet.py)
    confidnet_sha256: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_bands(self) -> int:
        return len(self.input.bands)

    @property
    def in_channels(self) -> int:
        return self.n_bands + (self.n_classes if self.clicks.enabled else 0)

    def class_index(self, name: str) -> int | None:
        for info in self.classes:
            if info.name.lower() == name.lower():
                return info.index
        return None

    def with_updates(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        inp = asdict(self.input)
        if self.input.gsd_range_m is None:  # cards from before the range keep their exact JSON
            del inp["gsd_range_m"]
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "architecture": {
                "name": self.architecture,
                "encoder": self.encoder,
                "kwargs": dict(self.architecture_kwargs),
            },
            "classes": [asdict(c) for c in self.classes],
            "input": inp,
            "clicks": asdict(self.clicks),
            "tiling": asdict(self.tiling),
            "mc_dropout": {"rate": self.mc_dropout_rate},
            "weights": {
                "file": self.weights_file,
                "dtype": self.weights_dtype,
                "sha256": self.weights_sha256,
            },
            **(
                {"confidnet": {"file": self.confidnet_file, "sha256": self.confidnet_sha256}}
                if self.confidnet_file
                else {}
            ),
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "model.json") -> ModelCard:
        """Parse and validate; every problem becomes one :class:`UserError` naming the key."""
        try:
            return _parse_card(data)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise UserError(f"{where}: malformed model card ({type(exc).__name__}: {exc})") from None


def _require(data: dict[str, Any], key: str) -> Any:
    if key not in data:
        raise UserError(f"missing key '{key}'")
    return data[key]


def _pair(values: Any) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    return low, high


def _check_normalization(norm: Normalization) -> None:
    """Finite numbers only: a NaN or zero ``std`` would pass as a model and yield NaN maps."""
    for key in ("min", "max", "mean", "std", "percentiles"):
        values = getattr(norm, key)
        if not all(math.isfinite(v) for v in values):
            raise UserError(
                f"'input.normalization.{key}' holds a value that is not a finite number: {values}"
            )
    if any(s <= 0 for s in norm.std):
        raise UserError(f"'input.normalization.std' must be positive, not {norm.std}")
    if any(hi <= lo for lo, hi in zip(norm.min, norm.max, strict=True)):
        raise UserError("'input.normalization' needs max > min for every band")
    low, high = norm.percentiles
    if not 0.0 <= low < high <= 100.0:
        raise UserError(
            f"'input.normalization.percentiles' must be 0 ≤ low < high ≤ 100, not {norm.percentiles}"
        )


def _check_file_name(key: str, name: Any) -> None:
    """A bundle is self-contained: its files are plain names inside its folder."""
    if name is None:
        return
    text = str(name)
    if key == "confidnet.file" and text == "":
        return
    if not text or "/" in text or "\\" in text or text in (".", "..") or ":" in text:
        raise UserError(f"'{key}' must be a file name inside the bundle folder, not {text!r}")


def _parse_card(data: dict[str, Any]) -> ModelCard:
    if not isinstance(data, dict):
        raise UserError("the card is not a JSON object")
    if data.get("format", FORMAT) != FORMAT:
        raise UserError(f"not a model bundle card (format '{data.get('format')}')")
    if int(data.get("format_version", 1)) > FORMAT_VERSION:
        raise UserError(
            f"bundle format {data['format_version']} is newer than this engine "
            f"understands ({FORMAT_VERSION}); update the plugin"
        )
    arch = _require(data, "architecture")
    tiling = data.get("tiling", {})
    weights = data.get("weights", {})
    confidnet = data.get("confidnet", {})
    for key, name in (("weights.file", weights.get("file")), ("confidnet.file", confidnet.get("file"))):
        _check_file_name(key, name)
    mc_rate = float(data.get("mc_dropout", {}).get("rate", 0.1))
    if not 0.0 <= mc_rate < 1.0:
        raise UserError(f"'mc_dropout.rate' must be in [0, 1), not {mc_rate}")
    return ModelCard(
        name=str(_require(data, "name")),
        version=str(data.get("version", "0.1.0")),
        description=str(data.get("description", "")),
        architecture=str(_require(arch, "name")),
        encoder=str(_require(arch, "encoder")),
        architecture_kwargs=dict(arch.get("kwargs", {})),
        classes=_parse_classes(_require(data, "classes")),
        input=_parse_input(data.get("input", {})),
        clicks=_parse_clicks(data.get("clicks", {})),
        tiling=Tiling(int(tiling.get("tile_size", 512)), int(tiling.get("overlap", 128))),
        mc_dropout_rate=mc_rate,
        weights_file=str(weights.get("file", "model.safetensors")),
        weights_dtype=str(weights.get("dtype", "float16")),
        weights_sha256=str(weights.get("sha256", "")),
        confidnet_file=str(confidnet.get("file", "")),
        confidnet_sha256=str(confidnet.get("sha256", "")),
        provenance=dict(data.get("provenance", {})),
    )


def _parse_classes(entries: Any) -> tuple[ClassInfo, ...]:
    classes = tuple(
        ClassInfo(int(c["index"]), str(c["name"]), str(c.get("color", "#808080"))) for c in entries
    )
    if not classes:
        raise UserError("'classes' is empty")
    if [c.index for c in classes] != list(range(len(classes))):
        raise UserError("class indices must be 0, 1, 2, … in order")
    for c in classes:
        if not _COLOR.match(c.color):
            raise UserError(f"class '{c.name}' colour '{c.color}' is not #rrggbb")
    if len(classes) > 254:
        raise UserError("at most 254 classes fit a uint8 class map with nodata 255")
    return classes


def _parse_input(inp: dict[str, Any]) -> InputSpec:
    norm = inp.get("normalization", {})
    bands = tuple(int(b) for b in inp.get("bands", (1, 2, 3)))
    if not bands or min(bands) < 1:
        raise UserError("'input.bands' must list 1-based band numbers")
    n = len(bands)

    def per_band(key: str, default: float) -> tuple[float, ...]:
        values = norm.get(key, [default] * n)
        values = [values] * n if isinstance(values, (int, float)) else list(values)
        if len(values) != n:
            raise UserError(f"'input.normalization.{key}' needs {n} values, one per band")
        return tuple(float(v) for v in values)

    normalization = Normalization(
        method=str(norm.get("method", "fixed")),
        min=per_band("min", 0.0),
        max=per_band("max", 255.0),
        percentiles=_pair(norm.get("percentiles", (2.0, 98.0))),
        mean=per_band("mean", 0.5),
        std=per_band("std", 0.25),
    )
    if normalization.method not in NORMALIZATION_METHODS:
        raise UserError(f"normalization method must be one of {', '.join(NORMALIZATION_METHODS)}")
    _check_normalization(normalization)
    gsd = inp.get("gsd_m")
    if gsd is not None and not (isinstance(gsd, int | float) and math.isfinite(gsd) and gsd > 0):
        raise UserError(f"'input.gsd_m' must be a positive number of metres, not {gsd!r}")
    return InputSpec(
        gsd_range_m=_gsd_range(inp.get("gsd_range_m"), gsd),
        bands=bands,
        band_names=tuple(inp.get("band_names", [f"band {b}" for b in bands])),
        dtype=str(inp.get("dtype", "uint8")),
        gsd_m=gsd,
        normalization=normalization,
    )


def _gsd_range(values: Any, gsd: float | None) -> tuple[float, float] | None:
    if values is None:
        return None
    numbers = isinstance(values, list | tuple) and len(values) == 2
    numbers = numbers and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    if not (numbers and 0 < values[0] <= values[1]):
        raise UserError(f"'input.gsd_range_m' must be two positive metres, low ≤ high, not {values!r}")
    low, high = _pair(values)
    if gsd is None or not low <= gsd <= high:
        raise UserError(f"'input.gsd_range_m' {values!r} must hold 'input.gsd_m' ({gsd!r})")
    return low, high


def _parse_clicks(clicks: dict[str, Any]) -> ClickEncoding:
    encoding = ClickEncoding(
        enabled=bool(clicks.get("enabled", True)),
        encoding=str(clicks.get("encoding", "distance_transform")),
        radius=int(clicks.get("radius", 10)),
    )
    if encoding.encoding != "distance_transform" or encoding.radius < 1:
        raise UserError("clicks: only 'distance_transform' with radius ≥ 1 is supported")
    return encoding
