"""Processing algorithms: thin wrappers that gather parameters, call the engine, and hand its
files to Processing's outputs. Engine errors become QgsProcessingException (one clear line)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsVectorLayer,
)

from sial_qgis_plugin.environment import bundled_models

ACQUISITIONS = ["entropy", "margin", "mcdropout", "odin", "confidnet"]
"""The engine's acquisition functions; ``confidnet`` needs a bundle with a ConfidNet head (the
engine says so when it has none)."""
DEVICES = ["auto", "cpu", "cuda"]


def _monitor(feedback):
    from backend.progress import Monitor

    def progress(fraction: float, message: str) -> None:
        feedback.setProgress(100.0 * fraction)
        if message:
            feedback.setProgressText(message)

    return Monitor(progress, feedback.isCanceled, feedback.pushInfo)


def _engine(call, *args):
    """Run an engine call; its user errors become Processing errors, cancelling stays quiet."""
    from backend.errors import Cancelled, UserError

    try:
        return call(*args)
    except UserError as exc:
        raise QgsProcessingException(str(exc)) from None
    except Cancelled:
        raise QgsProcessingException("cancelled") from None


class EngineAlgorithm(QgsProcessingAlgorithm):
    group_name = "Interactive segmentation"

    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    def group(self) -> str:
        return self.group_name

    def groupId(self) -> str:  # noqa: N802 - QGIS API
        return "segmentation"

    def flags(self):
        # torch runs its own threads; several algorithms at once would only compete for the cores.
        return super().flags() | Qgis.ProcessingAlgorithmFlag.NoThreading

    def _model_parameter(self) -> None:
        models = bundled_models()
        default = str(models[0].directory) if models else None
        folder = Qgis.ProcessingFileParameterBehavior.Folder
        self.addParameter(
            QgsProcessingParameterFile("MODEL", "Model bundle (folder)", folder, defaultValue=default)
        )

    def _map_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_CLASSES", "Class map"))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_UNCERTAINTY", "Uncertainty"))
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                "OUTPUT_PATCHES", "Ranked patches", Qgis.ProcessingSourceType.VectorPolygon
            )
        )

    def _deliver(self, report, parameters, context) -> dict[str, Any]:
        """Copy the engine's files to the requested outputs; patches go through a feature sink."""
        results = {}
        for key, source in (("OUTPUT_CLASSES", report.classes), ("OUTPUT_UNCERTAINTY", report.uncertainty)):
            target = self.parameterAsOutputLayer(parameters, key, context)
            if Path(target).suffix.lower() in (".tif", ".tiff"):
                shutil.copyfile(source, target)
            else:
                from osgeo import gdal

                gdal.Translate(target, str(source))
            results[key] = target
        patches = QgsVectorLayer(f"{report.patches}|layername=patches", "patches", "ogr")
        sink, sink_id = self.parameterAsSink(
            parameters, "OUTPUT_PATCHES", context, patches.fields(), patches.wkbType(), patches.crs()
        )
        for feature in patches.getFeatures():
            sink.addFeature(QgsFeature(feature), QgsFeatureSink.Flag.FastInsert)
        results["OUTPUT_PATCHES"] = sink_id
        return results


class PredictAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "predict"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return "Predict class map, uncertainty and patch ranking"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return (
            "Segments the raster with a model bundle (optionally with correction clicks as input "
            "channels) and ranks patches by uncertainty, most uncertain first."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster"))
        self._model_parameter()
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "CLICKS",
                "Correction clicks (points with class_id)",
                [Qgis.ProcessingSourceType.VectorPoint],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum("ACQUISITION", "Uncertainty", ACQUISITIONS, defaultValue=0)
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self._map_outputs()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from backend.predict.job import PredictParameters, run_predict

        raster = self.parameterAsRasterLayer(parameters, "INPUT", context)
        clicks = None
        if parameters.get("CLICKS"):
            clicks = self.parameterAsCompatibleSourceLayerPath(
                parameters, "CLICKS", context, ["gpkg", "shp", "geojson"], "gpkg", feedback
            )
        params = PredictParameters(
            raster=Path(raster.source()),
            out_dir=Path(tempfile.mkdtemp(prefix="sial-predict-")),
            model_dir=Path(self.parameterAsFile(parameters, "MODEL", context)),
            clicks=Path(clicks) if clicks else None,
            acquisition=ACQUISITIONS[self.parameterAsEnum(parameters, "ACQUISITION", context)],
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
        )
        report = _engine(run_predict, params, _monitor(feedback))
        for notice in report.notices:
            feedback.pushInfo(notice)
        return self._deliver(report, parameters, context)


class RankAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "rank"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return "Rank patches by uncertainty"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return (
            "Scores each patch of a grid by the mean uncertainty over its valid pixels; rank 1 first. "
            "With the class map of the same prediction, each pixel weighs by how rare its class is on "
            "the map, as the dock ranks its queue in AC mode."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Uncertainty raster"))
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "CLASSES", "Class map of the same prediction (weighs rare classes more)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "PATCH_SIZE",
                "Patch size (pixels)",
                Qgis.ProcessingNumberParameterType.Integer,
                defaultValue=512,
                minValue=16,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                "OUTPUT", "Ranked patches", Qgis.ProcessingSourceType.VectorPolygon
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from backend.io.outputs import write_patches
        from backend.predict.patch_scores import scores_of_maps

        raster = self.parameterAsRasterLayer(parameters, "INPUT", context)
        classes = self.parameterAsRasterLayer(parameters, "CLASSES", context)
        size = self.parameterAsInt(parameters, "PATCH_SIZE", context)
        class_map = Path(classes.source()) if classes else None
        info, scores = _engine(scores_of_maps, Path(raster.source()), size, class_map)
        path = Path(tempfile.mkdtemp(prefix="sial-rank-")) / "patches.gpkg"
        write_patches(path, info, scores, "given")
        patches = QgsVectorLayer(f"{path}|layername=patches", "patches", "ogr")
        sink, sink_id = self.parameterAsSink(
            parameters, "OUTPUT", context, patches.fields(), patches.wkbType(), raster.crs()
        )
        for feature in patches.getFeatures():
            sink.addFeature(QgsFeature(feature), QgsFeatureSink.Flag.FastInsert)
        return {"OUTPUT": sink_id}


class RefineAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "refine"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return "Refine with correction clicks (AC / DISCA)"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return (
            "Uses correction clicks as input channels (AC) and, with DISCA rounds > 0, first retrains "
            "the model on them (cross-entropy on the clicks + λ·L1 to the initial prediction)."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster"))
        self._model_parameter()
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "CLICKS", "Correction clicks (points with class_id)", [Qgis.ProcessingSourceType.VectorPoint]
            )
        )
        number = Qgis.ProcessingNumberParameterType
        integer, double = number.Integer, number.Double
        self.addParameter(
            QgsProcessingParameterNumber("ROUNDS", "DISCA rounds (0: AC only)", integer, 1, minValue=0)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "STEPS", "Steps per round (0: the engine's, 5 on five clicks or more, else 10)", integer, 0,
                minValue=0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber("ANCHOR_WEIGHT", "Anchor weight (λ)", double, 3.0, minValue=0)
        )
        self.addParameter(QgsProcessingParameterNumber("LR", "Learning rate", double, 2e-4, minValue=1e-7))
        self.addParameter(
            QgsProcessingParameterNumber(
                "WEIGHT_AVERAGE", "Rounds' weight average β (0: each round's own weights)", double, 0.5,
                minValue=0, maxValue=0.95,
            )
        )  # fmt: skip
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self._map_outputs()
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "OUTPUT_MODEL", "Adapted model bundle", optional=True, createByDefault=False
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from backend.learn.disca import DiscaSettings
        from backend.learn.refine import RefineParameters, run_refine

        raster = self.parameterAsRasterLayer(parameters, "INPUT", context)
        clicks = self.parameterAsCompatibleSourceLayerPath(
            parameters, "CLICKS", context, ["gpkg", "shp", "geojson"], "gpkg", feedback
        )
        model_out = self.parameterAsString(parameters, "OUTPUT_MODEL", context)
        params = RefineParameters(
            raster=Path(raster.source()),
            model_dir=Path(self.parameterAsFile(parameters, "MODEL", context)),
            clicks=Path(clicks),
            out_dir=Path(tempfile.mkdtemp(prefix="sial-refine-")),
            rounds=self.parameterAsInt(parameters, "ROUNDS", context),
            settings=DiscaSettings(
                steps=self.parameterAsInt(parameters, "STEPS", context) or None,
                anchor_weight=self.parameterAsDouble(parameters, "ANCHOR_WEIGHT", context),
                learning_rate=self.parameterAsDouble(parameters, "LR", context),
                weight_average=self.parameterAsDouble(parameters, "WEIGHT_AVERAGE", context),
            ),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            adapted_model=Path(model_out) if model_out else None,
        )
        report = _engine(run_refine, params, _monitor(feedback))
        results = self._deliver(report, parameters, context)
        if model_out:
            results["OUTPUT_MODEL"] = model_out
        return results


class TrainAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return "Train a model bundle"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return (
            "Trains a model from image/label rasters described in a JSON config (see configs/ in the "
            "project). Resumes from its last checkpoint; long: hours on a CPU."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile("CONFIG", "Training config (JSON)", extension="json"))
        self.addParameter(
            QgsProcessingParameterNumber(
                "STEPS", "Steps (0: the config's)", Qgis.ProcessingNumberParameterType.Integer, 0, minValue=0
            )
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_MODEL", "Model bundle"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from backend.learn.training import train
        from backend.learn.training_config import TrainingConfig

        config = _engine(TrainingConfig.load, self.parameterAsFile(parameters, "CONFIG", context))
        steps = self.parameterAsInt(parameters, "STEPS", context)
        if steps:
            config.steps = steps
        out = Path(self.parameterAsString(parameters, "OUTPUT_MODEL", context))
        work = out.with_name(out.name + ".work")
        device = DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        _engine(train, config, out, work, device, _monitor(feedback), "QGIS Processing: sial:train")
        return {"OUTPUT_MODEL": str(out)}
