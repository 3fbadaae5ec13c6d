"""One Processing algorithm per backend job type. Each is a thin caller: it turns its
parameters into the job's params (the CLI's names), submits the job and follows it,
reporting progress through feedback and cancelling the job when the user cancels."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
    QgsRasterDataProvider,
)

from ..client import BackendError
from ..connection import get_client
from ..layers import export_raster_extent, raster_file_path, vector_file_path

RUNTIMES = ["torch", "onnx"]
DEVICES = ["auto", "cpu", "cuda"]
CONFIGS = ["base", "tiny"]
UNLABELED = ["ignore", "background"]


class BackendAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: submit a job, mirror its progress, honour cancel."""

    job_type = ""

    def group(self) -> str:
        return "GFM"

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "gfm"

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def add_overwrite(self) -> None:
        """The backend refuses to replace a previous result unless told to."""
        self.addParameter(QgsProcessingParameterBoolean(
            "OVERWRITE", "Replace a previous result in the output folder", defaultValue=False))

    def run_job(self, params: dict, feedback: QgsProcessingFeedback) -> dict:
        try:
            client = get_client()
            feedback.pushInfo(f"GFM backend: {client.connection.url}")
            job_id = client.submit(self.job_type, params)
            last = [""]

            def progress(info: dict) -> None:
                feedback.setProgress(100.0 * float(info.get("progress") or 0.0))
                msg = info.get("message") or ""
                if msg and msg != last[0]:
                    feedback.setProgressText(msg)
                    last[0] = msg

            info = client.wait(job_id, on_progress=progress, should_cancel=feedback.isCanceled)
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if info.get("state") != "succeeded":
            raise QgsProcessingException(
                f"GFM {self.job_type} job {info.get('state')}: {info.get('message') or ''}"
            )
        return info.get("outputs") or {}


def raster_path_for_backend(layer, feedback: QgsProcessingFeedback) -> str:
    """The file behind a raster layer, or a GeoTIFF written from a non-file layer."""
    path = raster_file_path(layer)
    if path:
        return path
    extent = layer.extent()
    native = layer.dataProvider().capabilities() & QgsRasterDataProvider.Size
    # web layers have no native pixel size: take 2048 px across the layer's extent
    size = layer.rasterUnitsPerPixelX() if native else extent.width() / 2048
    out = os.path.join(tempfile.mkdtemp(prefix="gfm-"), "layer.tif")
    feedback.pushInfo(f"{layer.name()} is not a file: writing it to {out}")
    return export_raster_extent(layer, extent, size, out)


class ClassifyAlgorithm(BackendAlgorithm):
    job_type = "classify"

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:  # noqa: N802
        return "Classify raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Runs a GFM model package over a raster and writes classes.tif, "
                "confidence.tif and polygons.gpkg (styled) to the output folder.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model package folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum("RUNTIME", "Runtime", RUNTIMES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum polygon area (m2)", QgsProcessingParameterNumber.Double, 0.0,
            minValue=0.0))
        self.add_overwrite()
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("CLASSES", "Classes"))
        self.addOutput(QgsProcessingOutputRasterLayer("CONFIDENCE", "Confidence"))
        self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Polygons",
                                                      QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        out = self.parameterAsString(parameters, "OUTPUT", context)
        params = {
            "raster": raster_path_for_backend(layer, feedback),
            "model": self.parameterAsFile(parameters, "MODEL", context),
            "out": out,
            "runtime": RUNTIMES[self.parameterAsEnum(parameters, "RUNTIME", context)],
            "device": DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            "min_area": self.parameterAsDouble(parameters, "MIN_AREA", context),
            "overwrite": self.parameterAsBool(parameters, "OVERWRITE", context),
        }
        self.run_job(params, feedback)
        return {
            "OUTPUT": out,
            "CLASSES": os.path.join(out, "classes.tif"),
            "CONFIDENCE": os.path.join(out, "confidence.tif"),
            "POLYGONS": os.path.join(out, "polygons.gpkg") + "|layername=polygons",
        }


class FinetuneAlgorithm(BackendAlgorithm):
    job_type = "finetune"

    def name(self) -> str:
        return "finetune"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune on polygons"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains a GFM model package on training polygons (any CRS) over one or more "
                "rasters; writes the model folder with report.json (per-class IoU).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "RASTERS", "Rasters", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterVectorLayer(
            "LABELS", "Training polygons", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", "Class field", parentLayerParameterName="LABELS", optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "ENCODER", "Encoder checkpoint (gfm.pth, Swin, ...)", optional=True))
        self.addParameter(QgsProcessingParameterEnum("CONFIG", "Encoder shape without checkpoint",
                                                     CONFIGS, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("UNLABELED", "Pixels outside polygons",
                                                     UNLABELED, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Head epochs",
                                                       defaultValue=30, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("ENCODER_EPOCHS", "Encoder epochs",
                                                       defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.add_overwrite()
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))
        self.addOutput(QgsProcessingOutputFolder("MODEL", "Model package"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        rasters = [raster_path_for_backend(layer, feedback) for layer in
                   self.parameterAsLayerList(parameters, "RASTERS", context)]
        labels_layer = self.parameterAsVectorLayer(parameters, "LABELS", context)
        labels = vector_file_path(labels_layer)
        if not labels:
            raise QgsProcessingException(
                f"{labels_layer.name()} is not saved to a file: save it (e.g. as GeoPackage) first")
        if labels_layer.isEditable() and labels_layer.isModified():
            raise QgsProcessingException(f"{labels_layer.name()} has unsaved edits: save them first")
        out = self.parameterAsString(parameters, "OUTPUT", context)
        params = {
            "rasters": rasters, "labels": labels, "out": out,
            "overwrite": self.parameterAsBool(parameters, "OVERWRITE", context),
            "config": CONFIGS[self.parameterAsEnum(parameters, "CONFIG", context)],
            "unlabeled": UNLABELED[self.parameterAsEnum(parameters, "UNLABELED", context)],
            "epochs": self.parameterAsInt(parameters, "EPOCHS", context),
            "encoder_epochs": self.parameterAsInt(parameters, "ENCODER_EPOCHS", context),
            "device": DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
        }
        field = self.parameterAsString(parameters, "CLASS_FIELD", context)
        if field:
            params["class_field"] = field
        encoder = self.parameterAsFile(parameters, "ENCODER", context)
        if encoder:
            params["encoder"] = encoder
        self.run_job(params, feedback)
        return {"OUTPUT": out, "MODEL": out}


class GeopileAlgorithm(BackendAlgorithm):
    job_type = "geopile"

    def name(self) -> str:
        return "geopile"

    def displayName(self) -> str:  # noqa: N802
        return "Build GeoPile"

    def shortHelpString(self) -> str:  # noqa: N802
        return "Turns a folder of imagery into a GeoPile-format dataset for continual pretraining."

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "SRC_FOLDER", "Imagery folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterNumber("CHIP", "Chip size (px)", defaultValue=192,
                                                       minValue=32))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "GeoPile folder"))
        self.addOutput(QgsProcessingOutputFolder("PILE", "GeoPile"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsString(parameters, "OUTPUT", context)
        self.run_job({
            "src_folder": self.parameterAsFile(parameters, "SRC_FOLDER", context), "out": out,
            "chip": self.parameterAsInt(parameters, "CHIP", context),
        }, feedback)
        return {"OUTPUT": out, "PILE": out}


class PretrainAlgorithm(BackendAlgorithm):
    job_type = "pretrain"

    def name(self) -> str:
        return "pretrain"

    def displayName(self) -> str:  # noqa: N802
        return "Continual pretraining"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("GFM continual pretraining of a Swin student on a GeoPile, distilled from a "
                "frozen ImageNet-22k teacher with masked image modelling.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "PILE_DIR", "GeoPile folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFile("TEACHER", "Teacher checkpoint",
                                                     optional=True))
        self.addParameter(QgsProcessingParameterEnum("CONFIG", "Model", CONFIGS, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs", defaultValue=100,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber("BATCH", "Images per step", defaultValue=128,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterBoolean("RESUME", "Resume", defaultValue=False))
        self.add_overwrite()
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Run folder"))
        self.addOutput(QgsProcessingOutputFolder("RUN", "Run folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsString(parameters, "OUTPUT", context)
        teacher = self.parameterAsFile(parameters, "TEACHER", context)
        self.run_job({
            "pile_dir": self.parameterAsFile(parameters, "PILE_DIR", context), "out": out,
            "teacher": teacher or "none",
            "config": CONFIGS[self.parameterAsEnum(parameters, "CONFIG", context)],
            "epochs": self.parameterAsInt(parameters, "EPOCHS", context),
            "batch": self.parameterAsInt(parameters, "BATCH", context),
            "resume": self.parameterAsBool(parameters, "RESUME", context),
            "overwrite": self.parameterAsBool(parameters, "OVERWRITE", context),
        }, feedback)
        return {"OUTPUT": out, "RUN": out}


class ExportAlgorithm(BackendAlgorithm):
    job_type = "export"

    def name(self) -> str:
        return "export"

    def displayName(self) -> str:  # noqa: N802
        return "Export ONNX"

    def shortHelpString(self) -> str:  # noqa: N802
        return "Writes model.onnx (with the model's metadata) for a model package."

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MODEL_DIR", "Model package folder", behavior=QgsProcessingParameterFile.Folder))
        self.addOutput(QgsProcessingOutputFolder("MODEL", "Model package"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        model_dir = self.parameterAsFile(parameters, "MODEL_DIR", context)
        self.run_job({"model_dir": model_dir}, feedback)
        return {"MODEL": model_dir}


ALGORITHMS = [ClassifyAlgorithm, FinetuneAlgorithm, GeopileAlgorithm, PretrainAlgorithm,
              ExportAlgorithm]
