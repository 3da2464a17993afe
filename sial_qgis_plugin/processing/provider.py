"""The plugin's Processing provider: the engine's jobs for batch runs, models and scripts."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from sial_qgis_plugin.environment import PLUGIN_DIR
from sial_qgis_plugin.processing.algorithms import (
    PredictAlgorithm,
    RankAlgorithm,
    RefineAlgorithm,
    TrainAlgorithm,
)
from sial_qgis_plugin.processing.predict_many import PredictManyAlgorithm


class SegmentationProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "sial"

    def name(self) -> str:
        return "Interactive segmentation"

    def icon(self) -> QIcon:
        return QIcon(str(PLUGIN_DIR / "icons" / "icon.svg"))

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        algorithms = (
            PredictAlgorithm(),
            PredictManyAlgorithm(),
            RankAlgorithm(),
            RefineAlgorithm(),
            TrainAlgorithm(),
        )
        for algorithm in algorithms:
            self.addAlgorithm(algorithm)
