"""QGIS style sidecars (``<name>.qml``) for the outputs.

QGIS applies a ``.qml`` next to a raster automatically when the raster is added, so a class map
opened by hand (not through the plugin) still shows the model's colours and class names in the
legend, and the uncertainty map shows as a semi-transparent heatmap. Plain XML: no QGIS needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..model.card import ClassInfo

HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
# Magma, as QGIS ships it: dark = certain, bright = uncertain.
HEATMAP_STOPS = ("#000004", "#3b0f70", "#8c2981", "#de4968", "#fe9f6d", "#fcfdbf")
HEATMAP_OPACITY = 0.6


def _document(renderer: str) -> str:
    return (
        f'{HEADER}<qgis version="3.22" styleCategories="AllStyleCategories">\n'
        f"  <pipe>\n{renderer}  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"
    )


def class_map_style(classes: Sequence[ClassInfo]) -> str:
    entries = "".join(
        f'        <paletteEntry value="{c.index}" color="{c.color}" alpha="255" label={quoteattr(c.name)}/>\n'
        for c in classes
    )
    return _document(
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n"
    )


def heatmap_style(minimum: float = 0.0, maximum: float = 1.0, label: str = "uncertainty") -> str:
    span = maximum - minimum if maximum > minimum else 1.0
    items = []
    for i, color in enumerate(HEATMAP_STOPS):
        value = minimum + span * i / (len(HEATMAP_STOPS) - 1)
        text = f"{value:.3g}"
        if i == 0:
            text += " (certain)"
        elif i == len(HEATMAP_STOPS) - 1:
            text += " (uncertain)"
        items.append(
            f'          <item value="{value:.6g}" color="{color}" alpha="255" label={quoteattr(text)}/>\n'
        )
    return _document(
        f'    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="{HEATMAP_OPACITY}" '
        f'alphaBand="-1" classificationMin="{minimum:.6g}" classificationMax="{maximum:.6g}" '
        'nodataColor="">\n'
        "      <rastershader>\n"
        f'        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        f'minimumValue="{minimum:.6g}" maximumValue="{maximum:.6g}" labelPrecision="3">\n'
        f"{''.join(items)}"
        "        </colorrampshader>\n"
        "      </rastershader>\n"
        "    </rasterrenderer>\n"
    )


def write_styles(
    classes_path: Path,
    uncertainty_path: Path,
    classes: Sequence[ClassInfo],
    heatmap_range: tuple[float, float],
) -> None:
    classes_path.with_suffix(".qml").write_text(class_map_style(classes), encoding="utf-8")
    uncertainty_path.with_suffix(".qml").write_text(heatmap_style(*heatmap_range), encoding="utf-8")
