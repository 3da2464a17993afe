"""A small visual report of a run: pictures a person would rather look at than read.

Thumbnails of the image, the class map before and after the clicks, the uncertainty heatmap
with the ranked patches, and mIoU against clicks, on one HTML page with the PNGs beside it.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ..io.outputs import CLASS_NODATA
from ..model.card import ModelCard

THUMBNAIL = 900  # longest side, pixels


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_thumbnail(path: Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """A decimated read (overviews when present): bands × h × w, or h × w for one band."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            factor = max(1, int(np.ceil(max(dataset.width, dataset.height) / THUMBNAIL)))
            shape = (max(1, dataset.height // factor), max(1, dataset.width // factor))
            bands = list(bands or range(1, dataset.count + 1))
            data = dataset.read(
                bands, out_shape=(len(bands), *shape), resampling=rasterio.enums.Resampling.nearest
            )
    return data[0] if len(bands) == 1 else data


def image_rgb(path: Path, bands: Sequence[int]) -> np.ndarray:
    """h × w × 3 floats in 0..1, stretched between the 2nd and 98th percentiles."""
    data = read_thumbnail(path, bands[:3]).astype(np.float32)
    if data.ndim == 2:
        data = np.stack([data] * 3)
    low, high = np.percentile(data, [2, 98])
    return np.clip((data.transpose(1, 2, 0) - low) / max(high - low, 1e-6), 0, 1)


def class_rgb(classes: np.ndarray, card: ModelCard) -> np.ndarray:
    """Colours of the classes (h × w × 4), nodata transparent."""
    palette = np.zeros((256, 4), dtype=np.float32)
    for info in card.classes:
        palette[info.index] = [*(v / 255 for v in info.rgb), 1.0]
    palette[CLASS_NODATA] = 0.0
    return palette[classes]


@dataclass
class Figure:
    file: str
    caption: str


def save_map(
    path: Path,
    image: np.ndarray,
    overlay: np.ndarray | None,
    title: str,
    patches: list[dict[str, Any]] | None = None,
    scale: float = 1.0,
    legend: ModelCard | None = None,
) -> None:
    """The image with a class map (RGBA) or an uncertainty map (magma) over it, optionally
    the ten best-ranked patches and a legend of the classes."""
    plt = _matplotlib()
    from matplotlib.patches import Patch, Rectangle

    figure, axes = plt.subplots(figsize=(7, 7 * image.shape[0] / image.shape[1] + 0.6), dpi=110)
    axes.imshow(image)
    if overlay is not None and overlay.ndim == 3:
        axes.imshow(overlay, alpha=0.6, interpolation="nearest")
    elif overlay is not None:
        axes.imshow(overlay, alpha=0.6, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    for patch in patches or []:
        top = patch["rank"] <= 5
        x, y, w, h = (v * scale for v in (patch["col"], patch["row"], patch["width"], patch["height"]))
        colour = "#ff8c00" if top else "#ffffff"
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.4 if top else 0.5))
        if patch["rank"] <= 10:
            label = str(patch["rank"])
            axes.text(x + w / 2, y + h / 2, label, color=colour, ha="center", va="center", fontweight="bold")
    if legend is not None:
        handles = [Patch(color=[v / 255 for v in c.rgb], label=c.name) for c in legend.classes]
        axes.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85)
    axes.set_title(title, fontsize=11)
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_html(
    path: Path, title: str, figures: Sequence[Figure], facts: Sequence[tuple[str, str]], notes: Sequence[str]
) -> Path:
    escape = html.escape
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    items = "".join(
        f'<figure><img src="{escape(f.file)}" alt="{escape(f.caption)}">'
        f"<figcaption>{escape(f.caption)}</figcaption></figure>"
        for f in figures
    )
    note = "".join(f"<p class=note>{escape(n)}</p>" for n in notes)
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1500px;margin:2em auto;color:#222}}
figure{{display:inline-block;margin:0 1em 1.5em 0;vertical-align:top;max-width:700px}}
img{{max-width:100%;border:1px solid #ccc}} table{{border-collapse:collapse;margin-bottom:1.5em}}
th,td{{border:1px solid #ddd;padding:.3em .7em;text-align:left}} .note{{color:#a15c00}}</style></head>
<body><h1>{escape(title)}</h1>{note}<table>{rows}</table>{items}</body></html>""",
        encoding="utf-8",
    )
    return path
