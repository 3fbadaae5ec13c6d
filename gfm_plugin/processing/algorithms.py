"""One Processing algorithm per backend job type. Each is a thin caller: its parameters
are made from the job's declaration in the backend (`declared`), it turns them into the
job's params, submits the job and follows it, reporting progress through feedback and
cancelling the job when the user cancels."""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFolder,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsRasterInterface,
)

from ..client import BackendError
from ..connection import get_client
from ..layers import export_raster_extent, raster_file_path, vector_file_path
from .declared import definition, model_folder, params_of, value

DESTINATIONS = ("out_dir", "out_file")


class BackendAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: parameters from the job's declaration, submit a job, mirror its
    progress, honour cancel. `main` names the params shown up front (the rest are under
    Advanced); `custom` those the algorithm reads itself (layers turned into files)."""

    job_type = ""
    main: frozenset[str] = frozenset()
    custom: frozenset[str] = frozenset()

    def group(self) -> str:
        return "GFM"

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "gfm"

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def initAlgorithm(self, config=None):  # noqa: N802
        specs = params_of(self.job_type)  # outputs last, as QGIS dialogs show them
        for spec in sorted(specs, key=lambda p: p["kind"] in DESTINATIONS):
            self.addParameter(definition(spec, self.main, self.job_type))
            extra = model_folder(spec, self.job_type)
            if extra is not None:
                self.addParameter(extra)
        self.add_outputs()

    def add_outputs(self) -> None:
        """Outputs beyond the destination parameters (layers to load)."""

    def declared_values(self, parameters, context) -> dict:
        """Every declared param the user gave (or whose default the dialog shows), by the
        backend's names; the `custom` ones are the algorithm's to add."""
        out = {}
        for spec in params_of(self.job_type):
            if spec["name"] not in self.custom:
                v = value(self, spec, parameters, context)
                if v is not None:
                    out[spec["name"]] = v
        return out

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
    native = layer.dataProvider().capabilities() & QgsRasterInterface.Capability.Size
    # web layers have no native pixel size: take 2048 px across the layer's extent
    size = layer.rasterUnitsPerPixelX() if native else extent.width() / 2048
    out = os.path.join(tempfile.mkdtemp(prefix="gfm-"), "layer.tif")
    feedback.pushInfo(f"{layer.name()} is not a file: writing it to {out}")
    return export_raster_extent(layer, extent, size, out)


class ClassifyAlgorithm(BackendAlgorithm):
    job_type = "classify"
    main = frozenset({"runtime", "device", "min_area", "overwrite"})
    custom = frozenset({"raster"})

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:  # noqa: N802
        return "Classify raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Runs a GFM model package over a raster and writes classes.tif, "
                "confidence.tif and polygons.gpkg (styled) to the output folder.")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputRasterLayer("CLASSES", "Classes"))
        self.addOutput(QgsProcessingOutputRasterLayer("CONFIDENCE", "Confidence"))
        self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Polygons",
                                                      QgsProcessing.SourceType.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        params = {"raster": raster_path_for_backend(layer, feedback)}
        params |= self.declared_values(parameters, context)
        files = self.run_job(params, feedback).get("files") or {}
        result = result_layers(files, params["out"], "CLASSES", "classes.tif")
        load_on_completion(context, result, ("POLYGONS", "CLASSES", "CONFIDENCE"), layer.name())
        return result


def result_layers(files: dict, out: str, key: str, class_raster: str) -> dict:
    """A result's outputs by Processing name: its class raster under `key`, the confidence,
    the polygons when written (paths as the backend wrote them, else in `out`)."""
    def path(name: str) -> str:
        return files.get(name, os.path.join(out, name))

    result = {"OUTPUT": out, key: path(class_raster), "CONFIDENCE": path("confidence.tif")}
    if "polygons.gpkg" in files:
        result["POLYGONS"] = files["polygons.gpkg"] + "|layername=polygons"
    return result


class QmlBeside(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded result by the .qml the backend wrote beside its file: Processing
    itself gives a GeoPackage layer the default style (one colour, no class names)."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        qml = Path(layer.source().split("|")[0]).with_suffix(".qml")
        if qml.is_file():
            layer.loadNamedStyle(str(qml))
            layer.triggerRepaint()


class SuggestionsStyle(QgsProcessingLayerPostProcessorInterface):
    """The dock's look for suggestions: orange outlines labelled by rank."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        from ..suggest_actions import style_suggestions

        style_suggestions(layer)
        layer.triggerRepaint()


POST_PROCESSORS = {"qml": QmlBeside, "suggestions": SuggestionsStyle}
# A context deletes its layers' post-processors when it ends (so each layer gets its own),
# but a Python subclass's methods run only while Python holds the object: the latest ones
# are kept here.
_ALIVE: collections.deque = collections.deque(maxlen=64)


def load_on_completion(context, result: dict, keys: tuple[str, ...], name: str,
                       style: str = "qml") -> None:
    """The result layers QGIS loads when the algorithm ends, each styled (by the .qml
    beside it), named after what was processed."""
    for key in keys:
        if key in result:
            details = QgsProcessingContext.LayerDetails(f"{key.lower()} ({name})",
                                                        context.project(), key)
            processor = POST_PROCESSORS[style]()
            _ALIVE.append(processor)
            details.setPostProcessor(processor)
            context.addLayerToLoadOnCompletion(result[key], details)


def labels_file(algorithm: QgsProcessingAlgorithm, parameters, context) -> str:
    """The file behind the LABELS layer, refused when unsaved (the backend reads the file)."""
    labels_layer = algorithm.parameterAsVectorLayer(parameters, "LABELS", context)
    labels = vector_file_path(labels_layer)
    if not labels:
        raise QgsProcessingException(
            f"{labels_layer.name()} is not saved to a file: save it (e.g. as GeoPackage) first")
    if labels_layer.isEditable() and labels_layer.isModified():
        raise QgsProcessingException(f"{labels_layer.name()} has unsaved edits: save them first")
    return labels


class FinetuneAlgorithm(BackendAlgorithm):
    job_type = "finetune"
    main = frozenset({"class_field", "encoder", "config", "unlabeled", "quick", "epochs",
                      "encoder_epochs", "device", "overwrite"})
    custom = frozenset({"rasters", "labels", "class_field"})

    def name(self) -> str:
        return "finetune"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune on polygons"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains a GFM model package on training polygons (any CRS) over one or more "
                "rasters; writes the model folder with report.json (per-class IoU).")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputFolder("MODEL", "Model package"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        rasters = [raster_path_for_backend(layer, feedback) for layer in
                   self.parameterAsLayerList(parameters, "RASTERS", context)]
        labels = labels_file(self, parameters, context)
        params = {"rasters": rasters, "labels": labels} | self.declared_values(parameters, context)
        field = self.parameterAsString(parameters, "CLASS_FIELD", context)
        if field:
            params["class_field"] = field
        self.run_job(params, feedback)
        return {"OUTPUT": params["out"], "MODEL": params["out"]}


class GeopileAlgorithm(BackendAlgorithm):
    job_type = "geopile"
    main = frozenset({"chip"})

    def name(self) -> str:
        return "geopile"

    def displayName(self) -> str:  # noqa: N802
        return "Build GeoPile"

    def shortHelpString(self) -> str:  # noqa: N802
        return "Turns a folder of imagery into a GeoPile-format dataset for continual pretraining."

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputFolder("PILE", "GeoPile"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        params = self.declared_values(parameters, context)
        self.run_job(params, feedback)
        return {"OUTPUT": params["out"], "PILE": params["out"]}


class PretrainAlgorithm(BackendAlgorithm):
    job_type = "pretrain"
    main = frozenset({"teacher", "config", "epochs", "batch", "resume", "overwrite"})

    def name(self) -> str:
        return "pretrain"

    def displayName(self) -> str:  # noqa: N802
        return "Continual pretraining"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("GFM continual pretraining of a Swin student on a GeoPile, distilled from a "
                "frozen ImageNet-22k teacher with masked image modelling. Without a teacher "
                "checkpoint it trains with masked image modelling alone.")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputFolder("RUN", "Run folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        params = {"teacher": "none"} | self.declared_values(parameters, context)
        self.run_job(params, feedback)
        return {"OUTPUT": params["out"], "RUN": params["out"]}


class ExportAlgorithm(BackendAlgorithm):
    job_type = "export"

    def name(self) -> str:
        return "export"

    def displayName(self) -> str:  # noqa: N802
        return "Export ONNX"

    def shortHelpString(self) -> str:  # noqa: N802
        return "Writes model.onnx (with the model's metadata) for a model package."

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputFolder("MODEL", "Model package"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        params = self.declared_values(parameters, context)
        self.run_job(params, feedback)
        return {"MODEL": params["model_dir"]}


def pair_paths(algorithm: QgsProcessingAlgorithm, parameters, context, feedback) -> dict:
    """BEFORE and AFTER layers as files the backend reads, and the pair's name."""
    layers = [algorithm.parameterAsRasterLayer(parameters, key, context) for key in ("BEFORE", "AFTER")]
    return {"before": raster_path_for_backend(layers[0], feedback),
            "after": raster_path_for_backend(layers[1], feedback),
            "name": f"{layers[0].name()} → {layers[1].name()}"}


class DetectChangeAlgorithm(BackendAlgorithm):
    job_type = "detect-change"
    main = frozenset({"runtime", "device", "min_area", "overwrite"})
    custom = frozenset({"before", "after"})

    def name(self) -> str:
        return "detect_change"

    def displayName(self) -> str:  # noqa: N802
        return "Detect changes"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Runs a GFM change model over two dates of the same place. The result is on "
                "BEFORE's grid, where the two overlap (AFTER may be in another CRS, pixel size "
                "or extent): change.tif (0 no change, then the change classes), "
                "confidence.tif and polygons.gpkg of the changed regions, styled.")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputRasterLayer("CHANGE", "Change"))
        self.addOutput(QgsProcessingOutputRasterLayer("CONFIDENCE", "Confidence"))
        self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Changed regions",
                                                      QgsProcessing.SourceType.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        pair = pair_paths(self, parameters, context, feedback)
        params = {"before": pair["before"], "after": pair["after"]}
        params |= self.declared_values(parameters, context)
        files = self.run_job(params, feedback).get("files") or {}
        result = result_layers(files, params["out"], "CHANGE", "change.tif")
        load_on_completion(context, result, ("POLYGONS", "CHANGE", "CONFIDENCE"), pair["name"])
        return result


class FinetuneChangeAlgorithm(BackendAlgorithm):
    job_type = "finetune-change"
    main = frozenset({"class_field", "encoder", "config", "unlabeled", "epochs", "encoder_epochs",
                      "device", "overwrite"})
    custom = frozenset({"before", "after", "labels", "class_field"})

    def name(self) -> str:
        return "finetune_change"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune for changes"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains a GFM change model on polygons drawn where something changed between "
                "two dates (on either date, any CRS). Without a class field the model maps "
                "change / no change; with one, each value is a kind of change. Pixels outside "
                "the polygons count as no change (unlabeled: background) or are ignored.")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputFolder("MODEL", "Change model package"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        pair = pair_paths(self, parameters, context, feedback)
        params = {"before": pair["before"], "after": pair["after"],
                  "labels": labels_file(self, parameters, context)}
        params |= self.declared_values(parameters, context)
        field = self.parameterAsString(parameters, "CLASS_FIELD", context)
        if field:
            params["class_field"] = field
        self.run_job(params, feedback)
        return {"OUTPUT": params["out"], "MODEL": params["out"]}


class SuggestAlgorithm(BackendAlgorithm):
    job_type = "suggest"
    main = frozenset({"count", "device", "overwrite"})
    custom = frozenset({"raster", "labels"})

    def name(self) -> str:
        return "suggest"

    def displayName(self) -> str:  # noqa: N802
        return "Suggest where to label"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Proposes squares to draw the next training polygons in: where the model is "
                "least sure, unlike the polygons already drawn (the model's own training "
                "polygons when none are given) and apart from each other. Each carries its "
                "rank, score and the two classes the model hesitates between.")

    def add_outputs(self) -> None:
        self.addOutput(QgsProcessingOutputVectorLayer("SUGGESTIONS", "Suggestions",
                                                      QgsProcessing.SourceType.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        params = {"raster": raster_path_for_backend(layer, feedback)}
        if parameters.get("LABELS"):
            params["labels"] = labels_file(self, parameters, context)
        params |= self.declared_values(parameters, context)
        files = self.run_job(params, feedback).get("files") or {}
        out = next(iter(files.values()), params["out"])
        result = {"OUTPUT": out, "SUGGESTIONS": out + "|layername=suggestions"}
        load_on_completion(context, result, ("SUGGESTIONS",), layer.name(), style="suggestions")
        return result


ALGORITHMS = [ClassifyAlgorithm, FinetuneAlgorithm, SuggestAlgorithm, DetectChangeAlgorithm,
              FinetuneChangeAlgorithm, GeopileAlgorithm, PretrainAlgorithm, ExportAlgorithm]
