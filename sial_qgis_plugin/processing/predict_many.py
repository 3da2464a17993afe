"""``sial:predict_many``: many rasters, or one huge mosaic, on a Dask cluster (a local one by
default), resumable. A thin wrapper of the engine's ``predict-many`` job."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from sial_qgis_plugin.processing.algorithms import ACQUISITIONS, DEVICES, EngineAlgorithm, _engine, _monitor


class PredictManyAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "predict_many"

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return "Predict many rasters or a large mosaic (Dask)"

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return (
            "Predicts every raster (and every raster of the folders, glob patterns or VRTs given as "
            "paths) on a Dask cluster: worker processes on this machine, or an existing cluster at "
            "tcp://HOST:PORT. Rasters larger than a block are split into blocks that blend exactly as "
            "one prediction would, and gathered in VRT mosaics. Running it again on the same output "
            "folder skips the blocks already finished."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "INPUTS", "Rasters", Qgis.ProcessingSourceType.Raster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "PATHS", "More inputs: files, folders or glob patterns, separated by ';'", optional=True
            )
        )
        self._model_parameter()
        self.addParameter(
            QgsProcessingParameterEnum("ACQUISITION", "Uncertainty", ACQUISITIONS, defaultValue=0)
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        integer = Qgis.ProcessingNumberParameterType.Integer
        self.addParameter(
            QgsProcessingParameterNumber("BLOCK", "Block size (pixels)", integer, 4096, minValue=32)
        )
        self.addParameter(
            QgsProcessingParameterNumber("WORKERS", "Local workers (0: sized to the machine)", integer, 0,
                                         minValue=0)
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterString(
                "SCHEDULER", "Existing Dask scheduler (tcp://HOST:PORT)", optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("RUN", "run.json"))
        self.addOutput(QgsProcessingOutputMultipleLayers("CLASSES", "Class maps"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from backend.cluster.job import run_predict_many
        from backend.cluster.parameters import ManyParameters

        inputs = [layer.source() for layer in self.parameterAsLayerList(parameters, "INPUTS", context)]
        paths = self.parameterAsString(parameters, "PATHS", context)
        inputs += [p.strip() for p in paths.split(";") if p.strip()]
        if not inputs:
            raise QgsProcessingException("no input: choose rasters or give paths")
        out = Path(self.parameterAsString(parameters, "OUTPUT", context))
        scheduler = self.parameterAsString(parameters, "SCHEDULER", context).strip() or None
        params = ManyParameters(
            inputs=inputs,
            out_dir=out,
            model_dir=Path(self.parameterAsFile(parameters, "MODEL", context)),
            acquisition=ACQUISITIONS[self.parameterAsEnum(parameters, "ACQUISITION", context)],
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            block=self.parameterAsInt(parameters, "BLOCK", context),
            workers=self.parameterAsInt(parameters, "WORKERS", context) or None,
            scheduler=scheduler,
            python=None if scheduler else _worker_python(),
        )
        report = _engine(run_predict_many, params, _monitor(feedback))
        for notice in report.notices:
            feedback.pushInfo(notice)
        classes = [str(out / entry["classes"]) for entry in report.run["inputs"]]
        return {"OUTPUT": str(out), "RUN": str(report.run_file), "CLASSES": classes}


def _worker_python() -> str:
    """The Python a local cluster's worker processes run: inside QGIS ``sys.executable`` is QGIS."""
    from sial_qgis_plugin.dependencies import python_executable
    from sial_qgis_plugin.installer import InterpreterNotFound

    try:
        return python_executable()
    except InterpreterNotFound as exc:
        raise QgsProcessingException(
            f"local Dask workers need QGIS's Python interpreter, which was not found (looked for "
            f"{', '.join(exc.looked)}): give the address of a running Dask scheduler instead"
        ) from None
