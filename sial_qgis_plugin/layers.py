"""The session's layers in QGIS, with QGIS's own renderers, grouped in the layer tree.

- class map: paletted, the model's colours and class names in the legend; a binary model's
  background class is not drawn, so that the image shows through everywhere but the objects;
- uncertainty: a semi-transparent magma heatmap over the image, spanning 0–1 for entropy and
  margin and the map's 2nd–98th percentile for the others (read from the engine's style, see
  acquisitions.py), named after the function it shows;
- patches: outlines labelled by rank, done patches greyed out;
- clicks: points coloured by class.

Each session has one group, named after the session (raster · model · time, or the analyst's
own name). Each layer remembers its role and its session (custom properties), so a saved project
finds its sessions again when reopened.
"""

from __future__ import annotations

import re
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

from .acquisitions import short_label
from .compat import qgis_enum

ROLE = "sial/role"
SESSION = "sial/session"
HEATMAP_OPACITY = 0.6
CLASS_MAP_OPACITY = 0.55  # the image stays readable under the classes
GROUP_PREFIX = "Segmentation session — "
BACKGROUND_NAMES = {"background", "other", "none", "nothing", "clutter", "unlabelled", "unlabeled"}
"""A binary model's class by one of these names is what its objects stand out from: not drawn."""


@dataclass(frozen=True)
class ClassStyle:
    index: int
    name: str
    color: str


def is_background(c: ClassStyle, classes: Sequence[ClassStyle]) -> bool:
    return len(classes) == 2 and c.name.strip().lower() in BACKGROUND_NAMES


def style_class_map(layer: QgsRasterLayer, classes: Sequence[ClassStyle]) -> None:
    entries = []
    for c in classes:
        color = QColor(c.color)
        if is_background(c, classes):
            color.setAlpha(0)  # transparent: a grey veil at 55 % would wash the image out
        entries.append(QgsPalettedRasterRenderer.Class(c.index, color, c.name))
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)
    renderer.setOpacity(CLASS_MAP_OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_heatmap(layer: QgsRasterLayer, minimum: float = 0.0, maximum: float = 1.0) -> None:
    ramp = QgsColorRampShader(minimum, maximum)
    ramp.setColorRampType(
        qgis_enum("Qgis.ShaderInterpolationMethod.Linear", "QgsColorRampShader.Type.Interpolated")
    )
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


def heatmap_range(outputs: Path) -> tuple[float, float]:
    """The range the engine styled the uncertainty map with (``uncertainty.qml``), else 0–1."""
    try:
        text = (outputs / "uncertainty.qml").read_text(encoding="utf-8")
    except OSError:
        return 0.0, 1.0
    found = {k: float(v) for k, v in re.findall(r'classification(Min|Max)="([-+0-9.eE]+)"', text)}
    if "Min" not in found or "Max" not in found or not found["Max"] > found["Min"]:
        return 0.0, 1.0
    return found["Min"], found["Max"]


def uncertainty_name(acquisition: str) -> str:
    return f"uncertainty: {short_label(acquisition)}"


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
    settings.placement = qgis_enum("Qgis.LabelPlacement.OverPoint", "QgsPalLayerSettings.Placement.OverPoint")
    text = QgsTextFormat()
    text.setFont(QFont("Sans", 10, QFont.Weight.Bold))
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

    def refresh_maps(self, outputs: Path, acquisition: str) -> None:
        """Re-read the rasters (the engine replaced the files) and repaint everything; the heatmap
        takes the range the engine styled it with, and the name of the function it shows."""
        for layer in (self.classes, self.uncertainty):
            layer.dataProvider().reloadData()
        shader = (
            self.uncertainty.renderer().shader() if hasattr(self.uncertainty.renderer(), "shader") else None
        )
        wanted = heatmap_range(outputs)
        function = shader.rasterShaderFunction() if shader is not None else None
        if function is None or (function.minimumValue(), function.maximumValue()) != wanted:
            style_heatmap(self.uncertainty, *wanted)
        self.uncertainty.setName(uncertainty_name(acquisition))
        for layer in (self.classes, self.uncertainty):
            layer.triggerRepaint()
        for layer in (self.patches, self.clicks):
            layer.dataProvider().reloadData()
            layer.reload()
            layer.triggerRepaint()


def _tag(layer, role: str, session: Path) -> None:
    layer.setCustomProperty(ROLE, role)
    layer.setCustomProperty(SESSION, str(Path(session).resolve()))


def _is_session(value: object, session_path: Path) -> bool:
    """Whether a SESSION property names ``session_path`` (older projects kept it unresolved)."""
    try:
        return bool(value) and Path(str(value)).resolve() == Path(session_path).resolve()
    except OSError:
        return False


def create_session_layers(
    session_path: Path,
    outputs: Path,
    label: str,
    classes: Sequence[ClassStyle],
    acquisition: str = "entropy",
    project: QgsProject | None = None,
) -> SessionLayers:
    """Add (or find again) the session's layers, styled, under one group above the image."""
    project = project or QgsProject.instance()
    found = find_session_layers(session_path, project)
    if found is not None:
        return found
    group = project.layerTreeRoot().insertGroup(0, GROUP_PREFIX + label)
    group.setCustomProperty(SESSION, str(Path(session_path).resolve()))
    classes_layer = QgsRasterLayer(str(outputs / "classes.tif"), "class map")
    uncertainty = QgsRasterLayer(str(outputs / "uncertainty.tif"), uncertainty_name(acquisition))
    patches = QgsVectorLayer(f"{session_path}|layername=patches", "patch queue", "ogr")
    clicks = QgsVectorLayer(f"{session_path}|layername=clicks", "clicks", "ogr")
    style_class_map(classes_layer, classes)
    style_heatmap(uncertainty, *heatmap_range(outputs))
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
        if _is_session(layer.customProperty(SESSION), session_path):
            roles[layer.customProperty(ROLE)] = layer
    group = session_group(session_path, project)
    if group is None or not {"classes", "uncertainty", "patches", "clicks"} <= set(roles):
        return None
    return SessionLayers(group, roles["classes"], roles["uncertainty"], roles["patches"], roles["clicks"])


def session_groups(project: QgsProject) -> list[QgsLayerTreeGroup]:
    return [g for g in project.layerTreeRoot().findGroups(True) if g.customProperty(SESSION)]


def session_group(session_path: Path, project: QgsProject) -> QgsLayerTreeGroup | None:
    return next(
        (g for g in session_groups(project) if _is_session(g.customProperty(SESSION), session_path)), None
    )


def show_only_session(session_path: Path, project: QgsProject, tree_view=None) -> None:
    """The session's group shown and open; every other session's hidden and folded (kept)."""
    for group in session_groups(project):
        mine = _is_session(group.customProperty(SESSION), session_path)
        group.setItemVisibilityChecked(mine)
        group.setExpanded(mine)
        if tree_view is not None:
            tree_view.setExpanded(tree_view.node2index(group), mine)


def rename_session_group(session_path: Path, label: str, project: QgsProject) -> None:
    group = session_group(session_path, project)
    if group is not None:
        group.setName(GROUP_PREFIX + label)


def remove_session_layers(session_path: Path, project: QgsProject) -> None:
    """The session's layers and group out of the project (before its files are deleted)."""
    ids = [
        layer.id()
        for layer in project.mapLayers().values()
        if _is_session(layer.customProperty(SESSION), session_path)
    ]
    project.removeMapLayers(ids)
    group = session_group(session_path, project)
    if group is not None and group.parent() is not None:
        group.parent().removeChildNode(group)
