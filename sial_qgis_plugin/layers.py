"""The session's layers in QGIS, with QGIS's own renderers, grouped in the layer tree.

- class map: paletted, the model's colours and class names in the legend;
- uncertainty: a semi-transparent magma heatmap over the image;
- patches: outlines labelled by rank, done patches greyed out;
- clicks: points coloured by class.

Each layer remembers its role and its session (custom properties), so a saved project finds its
session again when reopened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsMarkerSymbol,
    QgsPalettedRasterRenderer,
    QgsPalLayerSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsRuleBasedRenderer,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor, QFont

ROLE = "sial/role"
SESSION = "sial/session"
HEATMAP_OPACITY = 0.6
CLASS_MAP_OPACITY = 0.55  # the image stays readable under the classes


@dataclass(frozen=True)
class ClassStyle:
    index: int
    name: str
    color: str


def style_class_map(layer: QgsRasterLayer, classes: Sequence[ClassStyle]) -> None:
    entries = [QgsPalettedRasterRenderer.Class(c.index, QColor(c.color), c.name) for c in classes]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)
    renderer.setOpacity(CLASS_MAP_OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_heatmap(layer: QgsRasterLayer, minimum: float = 0.0, maximum: float = 1.0) -> None:
    ramp = QgsColorRampShader(minimum, maximum)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setSourceColorRamp(QgsStyle.defaultStyle().colorRamp("Magma"))
    ramp.classifyColorRamp(6, -1)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(minimum)
    renderer.setClassificationMax(maximum)
    renderer.setOpacity(HEATMAP_OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_patches(layer: QgsVectorLayer) -> None:
    todo = QgsFillSymbol.createSimple({"style": "no", "outline_color": "#ff8c00", "outline_width": "0.7"})
    done = QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": "#9a9a9a", "outline_width": "0.4", "outline_style": "dash"}
    )
    root = QgsRuleBasedRenderer.Rule(None)
    for symbol, expression, label in ((done, "\"status\" = 'done'", "done"), (todo, "ELSE", "to visit")):
        rule = QgsRuleBasedRenderer.Rule(symbol, label=label)
        if expression == "ELSE":
            rule.setIsElse(True)
        else:
            rule.setFilterExpression(expression)
        root.appendChild(rule)
    layer.setRenderer(QgsRuleBasedRenderer(root))
    settings = QgsPalLayerSettings()
    settings.fieldName = "rank"
    settings.placement = QgsPalLayerSettings.OverPoint
    text = QgsTextFormat()
    text.setFont(QFont("Sans", 10, QFont.Bold))
    text.setSize(10)
    text.setColor(QColor("#ff8c00"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor("black"))
    buffer.setSize(1.0)
    text.setBuffer(buffer)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def style_clicks(layer: QgsVectorLayer, classes: Sequence[ClassStyle]) -> None:
    categories = []
    for c in classes:
        symbol = QgsMarkerSymbol.createSimple(
            {
                "name": "circle",
                "color": c.color,
                "size": "3.2",
                "outline_color": "white",
                "outline_width": "0.5",
            }
        )
        categories.append(QgsRendererCategory(c.index, symbol, c.name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class_id", categories))
    layer.triggerRepaint()


@dataclass
class SessionLayers:
    """The four layers of one session and their group."""

    group: QgsLayerTreeGroup
    classes: QgsRasterLayer
    uncertainty: QgsRasterLayer
    patches: QgsVectorLayer
    clicks: QgsVectorLayer

    @property
    def all(self) -> list:
        return [self.clicks, self.patches, self.uncertainty, self.classes]

    def show(self, view: str) -> None:
        """Which map lies over the image: "classes", "uncertainty" or "both"."""
        root = self.group
        root.findLayer(self.classes.id()).setItemVisibilityChecked(view in ("classes", "both"))
        root.findLayer(self.uncertainty.id()).setItemVisibilityChecked(view in ("uncertainty", "both"))

    def refresh_maps(self) -> None:
        """Re-read the rasters (the engine replaced the files) and repaint everything."""
        for layer in (self.classes, self.uncertainty):
            layer.dataProvider().reloadData()
            layer.triggerRepaint()
        for layer in (self.patches, self.clicks):
            layer.dataProvider().reloadData()
            layer.reload()
            layer.triggerRepaint()


def _tag(layer, role: str, session: Path) -> None:
    layer.setCustomProperty(ROLE, role)
    layer.setCustomProperty(SESSION, str(session))


def create_session_layers(
    session_path: Path,
    outputs: Path,
    raster_name: str,
    classes: Sequence[ClassStyle],
    project: QgsProject | None = None,
) -> SessionLayers:
    """Add (or find again) the session's layers, styled, under one group above the image."""
    project = project or QgsProject.instance()
    found = find_session_layers(session_path, project)
    if found is not None:
        return found
    group = project.layerTreeRoot().insertGroup(0, f"Segmentation session — {raster_name}")
    group.setCustomProperty(SESSION, str(session_path))
    classes_layer = QgsRasterLayer(str(outputs / "classes.tif"), "class map")
    uncertainty = QgsRasterLayer(str(outputs / "uncertainty.tif"), "uncertainty")
    patches = QgsVectorLayer(f"{session_path}|layername=patches", "patch queue", "ogr")
    clicks = QgsVectorLayer(f"{session_path}|layername=clicks", "clicks", "ogr")
    style_class_map(classes_layer, classes)
    style_heatmap(uncertainty)
    style_patches(patches)
    style_clicks(clicks, classes)
    layers = SessionLayers(group, classes_layer, uncertainty, patches, clicks)
    for role, layer in zip(("clicks", "patches", "uncertainty", "classes"), layers.all, strict=True):
        _tag(layer, role, session_path)
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    group.setExpanded(True)  # the legend: class names and colours, the heatmap's scale
    for layer in (classes_layer, uncertainty):
        group.findLayer(layer.id()).setExpanded(True)
    layers.show("classes")
    return layers


def find_session_layers(session_path: Path, project: QgsProject | None = None) -> SessionLayers | None:
    """The layers a saved project holds for ``session_path``, if all four are there."""
    project = project or QgsProject.instance()
    roles = {}
    for layer in project.mapLayers().values():
        if layer.customProperty(SESSION) == str(session_path):
            roles[layer.customProperty(ROLE)] = layer
    group = next(
        (
            g
            for g in project.layerTreeRoot().findGroups(True)
            if g.customProperty(SESSION) == str(session_path)
        ),
        None,
    )
    if group is None or not {"classes", "uncertainty", "patches", "clicks"} <= set(roles):
        return None
    return SessionLayers(group, roles["classes"], roles["uncertainty"], roles["patches"], roles["clicks"])
