"""Measuring a bundle on its validation rasters and writing its human-readable MODEL_CARD.md.

The figures are recorded in ``model.json`` (provenance → ``validation``) and shown in the card:
mIoU and per-class IoU with no clicks, and after 10 simulated clicks per raster (DIAL's
annotator, AC, patches in entropy order), pooled over the validation rasters.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.raster import RasterSource
from ..model.bundle import CARD_FILE, load_bundle, sha256_of
from ..model.card import ModelCard
from ..predict.evaluation import Scores, predict_in_memory, read_labels, score
from ..predict.inference import Predictor
from ..progress import Monitor
from .dial import BenchmarkParameters, run_benchmark


def evaluate(
    model_dir: Path,
    pairs: Sequence[tuple[str, str]],
    class_map: dict[int, int] | None = None,
    clicks: int = 10,
    device: str = "auto",
    monitor: Monitor | None = None,
) -> dict[str, Any]:
    """Pooled scores over ``pairs`` (image, labels): no clicks, and after ``clicks`` per raster."""
    monitor = monitor or Monitor()
    bundle = load_bundle(model_dir)
    names = [c.name for c in bundle.card.classes]
    plain: Scores | None = None
    clicked: Scores | None = None
    predictor = Predictor(bundle, device, owns_network=True)
    for i, (image, labels) in enumerate(pairs):
        truth = read_labels(labels, class_map)
        with RasterSource(image, bundle.card.input) as source:
            maps, _ = predict_in_memory(predictor, source)
        plain = score(maps.classes, truth, names) + plain if plain else score(maps.classes, truth, names)
        if clicks:
            with tempfile.TemporaryDirectory() as scratch:
                params = BenchmarkParameters(
                    raster=Path(image),
                    labels=Path(labels),
                    out_dir=Path(scratch),
                    clicks=clicks,
                    model_dir=model_dir,
                    device=device,
                    class_map=class_map,
                )
                run_benchmark(params, monitor.scaled(i / len(pairs), (i + 1) / len(pairs)))
                after = score(read_labels(Path(scratch) / "classes.tif"), truth, names)
            clicked = after + clicked if clicked else after
    result = {
        "rasters": [Path(image).name for image, _ in pairs],
        "clicks_0": {"miou": round(plain.miou, 2), "per_class_iou": plain.per_class()},
    }
    if clicked is not None:
        result[f"clicks_{clicks}"] = {
            "miou": round(clicked.miou, 2),
            "per_class_iou": clicked.per_class(),
            "annotator": "DIAL's (largest error of each patch, patches in entropy order), AC",
        }
    return result


def record(model_dir: Path, evaluation: dict[str, Any]) -> None:
    """Store the figures in model.json (the weights, and so their hash, stay as they are)."""
    path = model_dir / CARD_FILE
    data = json.loads(path.read_text())
    data.setdefault("provenance", {})["evaluation"] = evaluation
    ModelCard.from_json(data)  # still a valid card
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_model_card(model_dir: Path, failure_modes: Sequence[str] = (), notes: Sequence[str] = ()) -> Path:
    """MODEL_CARD.md from model.json: what it is, what it expects, how it was trained, how good."""
    card = load_bundle(model_dir).card
    p = card.provenance
    config = p.get("config", {})
    norm = card.input.normalization
    estimate = p.get("gsd_estimate") or config.get("gsd_estimate")
    gsd = (
        f"{card.input.gsd_m:g} m ({estimate})"
        if card.input.gsd_m and estimate
        else card.input.gsd_m or "not given with the data"
    )
    sha = sha256_of(model_dir / card.weights_file)[:16]
    lines = [
        f"# {card.name}",
        "",
        card.description,
        "",
        "## Classes",
        "",
        "| index | class | colour |",
        "|---|---|---|",
    ]
    lines += [f"| {c.index} | {c.name} | `{c.color}` |" for c in card.classes]
    lines += [
        "",
        "## Input",
        "",
        f"- Bands {', '.join(map(str, card.input.bands))} ({', '.join(card.input.band_names)}), "
        f"{card.input.dtype}: "
        f"values {norm.min[0]:g}–{norm.max[0]:g} become 0–1, then (v − {norm.mean[0]:g}) / {norm.std[0]:g}. "
        "Rasters of another data type are stretched between their 2nd and 98th percentiles.",
        f"- Ground sampling distance of the training imagery: {gsd}.",
        *_read_at_lines(card),
        f"- Click channels: one per class, distance cones of radius {card.clicks.radius} px.",
        f"- Tiles of {card.tiling.tile_size} px overlapping by {card.tiling.overlap}.",
        "",
        "## Network",
        "",
        f"{card.architecture} with a {card.encoder} encoder (segmentation-models-pytorch), "
        f"{card.in_channels} input channels, {_origin(config)} "
        f"Weights: `{card.weights_file}` ({card.weights_dtype}, SHA-256 `{sha}…`).",
        "",
        "## Training",
        "",
        f"- Data: {p.get('training_data', '?')}.",
        f"- Licence: {p.get('licence', '?')}.",
        f"- {p.get('steps', '?')} steps of {config.get('batch_size', '?')} crops of "
        f"{config.get('crop', '?')} px with "
        f"flips, 90° rotations, scale {config.get('scale_range', '?')} and colour jitter "
        f"{config.get('colour_jitter', '?')}{_style(config)}.",
        f"- DIAL's click pre-training: 1–{config.get('max_clicks', '?')} ground-truth points as click "
        "channels on "
        f"{round(100 * config.get('click_probability', 0))} % of the crops, none on the others.",
        f"- Cross-entropy + Dice, AdamW at {config.get('learning_rate', '?')} with warm-up and cosine decay, "
        f"seed {p.get('seed', '?')}.",
        f"- {p.get('training_minutes', '?')} minutes on {p.get('device', '?')}, torch {p.get('torch', '?')}.",
        f"- Reproduce: `{p.get('command', '?')}`",
    ]
    lines += _validation_lines(card, p)
    lines += _confidnet_lines(p.get("confidnet"))
    if failure_modes:
        lines += ["", "## Known failure modes", ""] + [f"- {m}" for m in failure_modes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_at_lines(card: ModelCard) -> list[str]:
    """What the trained range of pixel sizes does to a raster (io/grid.py), when the card has one."""
    if card.input.gsd_range_m is None:
        return []
    finest, coarsest = card.input.gsd_range_m
    return [
        f"- Pixel sizes the zoomed training crops covered: {finest:g}–{coarsest:g} m. A raster whose "
        "pixel size is known (its CRS, or `--pixel-size`) is read as it is within that range, and "
        f"outside it resampled to its nearer end (a 7.7-cm drone image at {finest:g} m)."
    ]


def _style(config: dict[str, Any]) -> str:
    """The training's other-sensor augmentations (learn/crops.py), those it used."""
    parts = [
        f"{label} {config[key]:g}{unit}"
        for key, label, unit in (
            ("hue_degrees", "hue turned by up to", "°"),
            ("saturation", "saturation scaled by up to ±", ""),
            ("blur_sigma", "blur of σ up to", " px on half the crops"),
            ("noise_std", "noise of σ up to", ""),
        )
        if config.get(key)
    ]
    return f", then {', '.join(parts)}" if parts else ""


def _origin(config: dict[str, Any]) -> str:
    source = config.get("initialise_from")
    if source:
        return f"initialised from the `{source}` bundle and fine-tuned (no ImageNet weights anywhere)."
    return "trained from scratch (no ImageNet weights could be downloaded)."


def _confidnet_lines(head: dict[str, Any] | None) -> list[str]:
    """The ConfidNet head, when the bundle has one: it drives the 'confidnet' acquisition."""
    if not head:
        return []
    return [
        "",
        "## ConfidNet head",
        "",
        f"`confidnet.safetensors`: DIAL's confidence network on the last decoder features, trained "
        f"{head['steps']} steps with the segmentation network frozen, to predict the softmax "
        f"probability of the true class on {', '.join(head['rasters'])} (MSE {head['first_loss']:.4f} "
        f"→ {head['last_loss']:.4f}, {head['seconds'] / 60:.0f} minutes). It ranks patches with "
        "`--acquisition confidnet` (uncertainty = 1 − confidence).",
        f"- Reproduce: `{head.get('command', '?')}`",
    ]


def _validation_lines(card: ModelCard, provenance: dict[str, Any]) -> list[str]:
    evaluation = provenance.get("evaluation", {})
    if not evaluation:
        return []
    header = "| | mIoU | " + " | ".join(c.name for c in card.classes) + " |"
    lines = [
        "",
        "## Validation",
        "",
        f"Rasters: {', '.join(evaluation.get('rasters', []))}. IoU in percent, pooled over the rasters.",
        "",
        header,
        "|---|---|" + "---|" * card.n_classes,
    ]
    for key in (k for k in evaluation if k.startswith("clicks_")):
        entry = evaluation[key]
        clicks = key.split("_")[1]
        label = "no clicks" if clicks == "0" else f"{clicks} simulated clicks per raster (AC)"
        values = [entry["per_class_iou"][c.name] for c in card.classes]
        per_class = " | ".join("–" if v is None else f"{v:.1f}" for v in values)
        lines.append(f"| {label} | {entry['miou']:.1f} | {per_class} |")
    history = provenance.get("history", [])
    if history:
        steps = ", ".join(f"step {h['step']}: {h['miou']:.1f}" for h in history)
        lines += ["", f"Validation mIoU during training (no clicks): {steps}."]
    return lines
