"""What the dock's buttons do. Owns the backend connection and the running QgsTasks."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

from . import layers
from .backend_process import SERVER_JSON, find_running
from .client import BackendClient, BackendError
from .connection import describe, get_client
from .jobs_panel import JobsPanel
from .messages import TITLE, Messages
from .output_folders import folder_for, new_file, new_folder_name, output_root, safe_name
from .settings import BackendSettings
from .tasks import BackendJobTask, StartBackendTask

POLL_S = 3
POLL_TIMEOUT_S = 2.0  # the poll runs on the GUI thread: a hung server may not freeze QGIS long


class GfmController:
    def __init__(self, iface, dock) -> None:
        self.iface = iface
        self.dock = dock
        self.client: BackendClient | None = None
        self.settings = BackendSettings.load()
        self.msg = Messages(iface, dock)
        self.jobs = JobsPanel(dock, self.msg, self._client, lambda: self.client,
                              lambda: self.settings.mode == "local")
        self.run_job = self.jobs.run_job
        self._start_task: StartBackendTask | None = None
        self._connecting = False  # a StartBackendTask runs (QGIS deletes it when it ends)
        d = dock
        d.connect_button.clicked.connect(self.connect_in_background)
        d.refresh_models_button.clicked.connect(self.refresh_models)
        d.model_combo.currentIndexChanged.connect(lambda _i: d.show_classes())
        d.classify_button.clicked.connect(self.classify_current)
        d.new_labels_button.clicked.connect(self.new_labels_layer)
        d.add_class_button.clicked.connect(self.add_class)
        d.finetune_button.clicked.connect(self.finetune_current)
        d.settings_button.clicked.connect(self.edit_settings)
        d.pretrain_button.clicked.connect(self.open_pretrain_dialog)
        d.get_weights_button.clicked.connect(self.open_weights)
        d.labels_combo.layerChanged.connect(self._preselect_class_field)
        if iface is not None and iface.activeLayer() is not None:
            if isinstance(iface.activeLayer(), QgsRasterLayer):
                d.raster_combo.setLayer(iface.activeLayer())
        from .change_actions import ChangeActions

        self.change = ChangeActions(self)
        from .suggest_actions import SuggestActions

        self.suggest = SuggestActions(self)
        self.show_outputs_folder()

    def show_outputs_folder(self) -> None:
        self.dock.set_outputs_folder(str(output_root(self.settings.results_dir)))

    # -- messages ----------------------------------------------------------------
    def info(self, text: str) -> None:
        self.msg.info(text)

    def warn(self, text: str) -> None:
        self.msg.warn(text)

    def error(self, text: str) -> None:
        self.msg.error(text)

    def confirm(self, text: str) -> bool:
        return self.msg.confirm(text)

    # -- backend -----------------------------------------------------------------
    def connect(self, start: bool = True) -> bool:
        try:
            client = get_client(self.settings, start=start)
            status = describe(client)
        except BackendError as exc:
            self._disconnected(str(exc))
            return False
        self._connected(client, status)
        return True

    def connect_in_background(self, start: bool = True) -> StartBackendTask:
        """Connect (starting a local backend if needed and `start`) without freezing QGIS."""
        self.dock.set_status("starting the backend…" if start else "connecting…", ok=True)

        def done(task: StartBackendTask, ok: bool) -> None:
            self._connecting = False
            if ok and task.client is not None:
                self._connected(task.client, task.status_text)
                self.load_jobs()
            else:
                self._disconnected(task.error or "the backend did not start")

        self._start_task = StartBackendTask(self.settings, done, start=start)
        self._connecting = True
        QgsApplication.taskManager().addTask(self._start_task)
        return self._start_task

    def _connected(self, client: BackendClient, status: str) -> None:
        self.client = client
        self._warn_plain_http(client.connection.url)
        self.dock.set_status(status, ok=True, where=client.connection.url)
        try:
            health = client.health()
        except BackendError:
            health = {}
        self.refresh_models()
        self.refresh_encoders(health)
        self._offer_upgrade(health.get("version"))

    def _warn_plain_http(self, url: str) -> None:
        """Once: a backend beyond this machine over plain HTTP sees tokens and files pass
        unencrypted."""
        host = urllib.parse.urlsplit(url).hostname or ""
        if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1") \
                and not getattr(self, "_warned_http", False):
            self._warned_http = True
            self.warn(f"{host} is reached over plain HTTP: the token and your files cross the "
                      "network unencrypted; ask for HTTPS (gfm serve --certfile) or use an SSH "
                      "tunnel")

    def _disconnected(self, problem: str) -> None:
        self.client = None
        self.dock.set_status(f"backend not available: {problem}", ok=False)

    def connect_at_startup(self) -> None:
        """Connect when a backend is known (a running local one, or a configured URL),
        without starting one: QGIS opens quickly, and the Jobs list shows the history."""
        if self.settings.mode == "local":
            known = (Path(self.settings.state_dir) / SERVER_JSON).is_file()
        else:
            known = bool(self.settings.url)
        if known:  # checked off the GUI thread: a slow or gone backend never delays QGIS
            self.connect_in_background(start=False)

    def load_jobs(self) -> None:
        """The backend's job history into the Jobs list."""
        if self.client is None:
            return
        try:
            self.jobs.merge(self.client.jobs())
        except BackendError:
            return

    def check_backend(self) -> None:
        """Every few seconds: the Jobs list follows the backend (Processing's jobs too), the
        status turns red when the backend stops answering or refuses the token, and a
        local backend restarted on another port is found again through its server.json."""
        if self._connecting:
            return
        if self.client is not None:
            try:
                self.jobs.merge(BackendClient(self.client.connection, POLL_TIMEOUT_S).jobs())
                return
            except BackendError as exc:
                self._disconnected(str(exc))
        if self.settings.mode == "local":
            client = find_running(self.settings.state_dir)
            if client is not None:
                try:
                    self._connected(client, describe(client))
                    self.load_jobs()
                except BackendError as exc:
                    self._disconnected(str(exc))

    def _offer_upgrade(self, backend_version: str | None) -> None:
        """A local backend older or newer than the plugin: offer Set up backend, which
        installs the plugin's own version."""
        from . import __version__ as plugin_version

        if self.settings.mode != "local" or backend_version in (None, plugin_version):
            return
        from qgis.PyQt.QtWidgets import QPushButton

        bar = self.iface.messageBar()
        item = bar.createMessage(TITLE, f"the backend is version {backend_version}, the plugin "
                                 f"{plugin_version}: set up the backend again to upgrade it")
        button = QPushButton("Set up backend…")
        button.clicked.connect(self.open_setup)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.MessageLevel.Warning, 0)

    def refresh_encoders(self, health: dict | None = None) -> None:
        if self.client is None:
            return
        try:
            installed = self.client.weights()["installed"]
            health = health or self.client.health()
            cpu_only = health.get("default_device", "cpu") == "cpu"
        except BackendError as exc:
            self.error(f"could not list the backend's weights: {exc}")
            return
        self.dock.set_encoders(installed, cpu_only)

    def open_weights(self) -> None:
        from .weights_dialog import WeightsDialog

        client = self._client()
        if client is not None:
            WeightsDialog(client, self.run_job, self.refresh_encoders, self.dock).exec()

    def open_setup(self) -> None:
        """Set up backend: install it into a venv of its own, then use and start it."""
        from .setup_dialog import SetupDialog

        def installed(python: str) -> None:
            self.settings.python = python
            self.settings.mode = "local"
            self.settings.save()
            self.client = None
            self.connect_in_background()

        SetupDialog(self.settings.state_dir, installed, self.dock).exec()

    def edit_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.dock)
        if dialog.exec():
            self.settings = dialog.result_settings()
            if not self.settings.save():
                self.warn("the token could not go into QGIS's authentication manager (no master "
                          "password was given); it is used until QGIS closes, never saved in "
                          "plain text")
            self.client = None
            self.connect_in_background()

    def _client(self) -> BackendClient | None:
        """A client that answers now: a local backend restarted on another port (by
        Processing, or after a crash) is found again through its server.json."""
        if self.client is not None:
            try:
                self.client.health()
            except BackendError:
                self.client = None
        if self.client is None and not self.connect(start=True):
            self.error(self.dock.status.text())
            return None
        return self.client

    def refresh_models(self) -> None:
        if self.client is None:
            return
        from .processing.provider import offer_models

        try:
            models = self.client.models()
        except BackendError as exc:
            self.error(str(exc))
            return
        self.dock.set_models(models)
        offer_models(models)

    # -- actions -----------------------------------------------------------------
    def classify_current(self) -> BackendJobTask | None:
        layer = self.dock.raster_combo.currentLayer()
        model = self.dock.current_model()
        if layer is None:
            self.error("pick a raster layer to classify")
            return None
        if not model:
            self.error("no model: fine-tune one first, or connect to a backend that has models")
            return None
        path = layers.raster_file_path(layer)
        if path is None:
            path = self._export_visible(layer, model)
            if path is None:
                return None
        name = layer.name()
        out = new_folder_name(folder_for("results", self.settings.results_dir), name)
        remote = self.settings.mode == "remote"  # the server's disk is not this machine's
        params = {"raster": path, "model": model["path"],
                  "out": {"output": out.name} if remote else str(out)}

        def loaded(info: dict) -> None:
            layers.add_classify_results((info.get("outputs") or {}).get("files") or str(out), name)
            self.info(f"classified {name}: results added to the group {name!r}{_times(info)}")
            self.msg.show_warnings(f"Classify {name}", info)

        return self.run_job(f"Classify {name}", "classify", params, loaded,
                            uploads=("raster",) if remote else (), download_to=out)

    def _export_visible(self, layer: QgsRasterLayer, model: dict) -> str | None:
        """A layer that is not a file (XYZ, WMS, ...) goes to the backend as a GeoTIFF of
        the map view in the layer's CRS, at the model's ground sample distance (not at
        screen resolution); the message says what was used."""
        canvas = self.iface.mapCanvas()
        gsd = ((model.get("model") or {}).get("gsd_m"))
        view_crs = canvas.mapSettings().destinationCrs()
        extent, pixel = layers.export_plan(layer, canvas.extent(), view_crs, gsd,
                                           canvas.mapUnitsPerPixel())
        width, height = extent.width() / pixel, extent.height() / pixel
        if extent.isEmpty():
            self.error(f"{layer.name()}: the map view does not show it; pan to the area to classify")
            return None
        if max(width, height) > layers.MAX_EXPORT_PX:
            self.error(f"{layer.name()} is not a file and the map view would be {width:.0f} x "
                       f"{height:.0f} px at {gsd or pixel:g} m: zoom to the area to classify, or "
                       "save the layer as GeoTIFF first")
            return None
        out = str(new_file(folder_for("exports", self.settings.results_dir),
                           safe_name(layer.name()), ".tif"))
        try:
            path = layers.export_raster_extent(layer, extent, pixel, out)
        except RuntimeError as exc:
            self.error(str(exc))
            return None
        used = f"{gsd:g} m, the model's ground sample distance" if gsd else "screen resolution"
        self.info(f"{layer.name()} is not a file: the map view was exported at {used}, "
                  f"{width:.0f} x {height:.0f} px in {layer.crs().authid()}")
        return path

    def new_labels_layer(self) -> QgsVectorLayer | None:
        raster = self.dock.raster_combo.currentLayer()
        crs = raster.crs() if raster is not None else QgsProject.instance().crs()
        path = new_file(folder_for("labels", self.settings.results_dir), "gfm_labels", ".gpkg")
        classes = layers.typed_class_names(self.dock.class_name_edit.text())
        layer = layers.create_labels_layer(str(path), crs, classes)
        self.dock.class_name_edit.clear()
        self.dock.labels_combo.setLayer(layer)
        self.dock.field_combo.setField(layers.LABEL_FIELD)
        if self.iface is not None:
            self.iface.setActiveLayer(layer)
        self.info(f"draw polygons in {layer.name()} ({path.name}) and pick each one's class")
        return layer

    def add_class(self) -> None:
        """Add the typed class names (comma-separated) to the labels layer's drop-down."""
        layer = self.dock.labels_combo.currentLayer()
        names = layers.typed_class_names(self.dock.class_name_edit.text())
        if layer is None or not names:
            self.error("pick the training-labels layer and type a class name (several: "
                       "separated by commas)")
            return
        classes = layers.label_classes(layer)
        layers.set_label_classes(layer, classes + [n for n in names if n not in classes])
        self.dock.class_name_edit.clear()

    def _preselect_class_field(self, layer) -> None:
        if isinstance(layer, QgsVectorLayer):
            self.dock.field_combo.setLayer(layer)
            self.dock.field_combo.setField(layers.class_field_for(layer) or "")

    def finetune_current(self) -> BackendJobTask | None:
        rasters = self.dock.chosen_training_rasters()
        labels = self.dock.labels_combo.currentLayer()
        if not rasters or labels is None:
            self.error("pick the training rasters and the training-labels layer")
            return None
        if layers.is_result_layer(labels) and not self.confirm(
                f"{labels.name()} is a classification result (its polygons are a model's map, "
                "not drawn labels). Train on it anyway?"):
            return None
        if not self.edits_saved(labels, "labels"):
            return None
        raster_paths = [layers.raster_file_path(r) for r in rasters]
        labels_path = layers.vector_file_path(labels)
        unsaved = [r.name() for r, p in zip(rasters, raster_paths, strict=True) if p is None]
        if unsaved or labels_path is None:
            self.error("fine-tuning needs the rasters and the labels saved as files"
                       + (f" ({', '.join(unsaved)} is not a file)" if unsaved else ""))
            return None
        name = safe_name(self.dock.model_name_edit.text().strip() or f"{rasters[0].name()}-model")
        target = self._model_folder(name)
        if target is None:
            return None
        out, overwrite = target
        params = {"rasters": raster_paths, "labels": labels_path, "out": out,
                  "overwrite": overwrite, "epochs": self.dock.epochs_spin.value(),
                  "quick": self.dock.quick_check.isChecked(), **self.dock.encoder_params()}
        field = self.dock.field_combo.currentField()
        if field:
            params["class_field"] = field
        problem = layers.class_problem(labels, field or None)
        if problem and not self.confirm(f"{problem}. Train anyway?"):
            return None

        def registered(info: dict) -> None:
            self.refresh_models()
            self.info(f"model {name} trained; IoU per class: {_iou_text(info)}")
            self.msg.show_warnings(f"Fine-tune {name}", info)

        uploads = ("rasters", "labels") + (
            ("encoder",) if Path(str(params.get("encoder", ""))).is_file() else ())
        return self.run_job(f"Fine-tune {name}", "finetune", params, registered,
                            uploads=uploads if self.settings.mode == "remote" else ())

    def edits_saved(self, labels: QgsVectorLayer, what: str) -> bool:
        """The drawn polygons saved to their file (editing stays on: the analyst draws on),
        or False after saying why not (nothing drawn, the save failed)."""
        if labels.isEditable() and labels.isModified() and not labels.commitChanges(False):
            self.error(f"could not save the edits of {labels.name()}")
            return False
        if labels.featureCount() == 0:
            self.error(f"no {what} drawn in {labels.name()}: draw some polygons first")
            return False
        return True

    def _model_folder(self, name: str) -> tuple[str | dict, bool] | None:
        """Where the new model goes and whether it replaces one (asked first). A remote
        backend keeps it in a folder of its own, listed by GET /models."""
        if self.settings.mode == "remote":
            return {"output": name}, False
        models = Path(self.settings.models_dir) if self.settings.models_dir else \
            folder_for("models", self.settings.results_dir)
        out = models / name
        exists = (out / "model.json").exists()
        if exists and not self.confirm(f"A model named {name} exists ({out}). Replace it?"):
            return None
        return str(out), exists


    def open_pretrain_dialog(self) -> None:
        from .pretrain_dialog import PretrainDialog

        dialog = PretrainDialog(self.dock)
        if dialog.exec():
            self.pretrain(dialog.request())

    def pretrain(self, req) -> BackendJobTask | None:
        """Build the GeoPile, then start continual pretraining on it."""
        if not req.src_folder or not req.pile_dir or not req.out:
            self.error("pretraining needs an imagery folder, a GeoPile folder and a run folder")
            return None
        pretrain_params = {"pile_dir": req.pile_dir, "out": req.out, "teacher": req.teacher,
                           "config": req.config, "epochs": req.epochs}

        def built(info: dict) -> None:
            self.info(f"GeoPile ready in {req.pile_dir}; pretraining starts")
            self.run_job(f"Pretrain {Path(req.out).name}", "pretrain", pretrain_params,
                         lambda _info: self.info(f"pretraining finished: {req.out}"))

        return self.run_job(f"GeoPile {Path(req.src_folder).name}", "geopile",
                            {"src_folder": req.src_folder, "out": req.pile_dir}, built)


def _times(info: dict) -> str:
    """' (job 12.3 s, transfer 4.5 s)' for a remote job; '' for a local one."""
    if info.get("transfer_s") is None:
        return ""
    run_s = (info.get("timings") or {}).get("run_s") or 0.0
    return f" (job {run_s:.1f} s, transfer {info['transfer_s']:.1f} s)"


def _iou_text(info: dict) -> str:
    """Per-class IoU; a class with no validation pixels says so instead of a zero."""
    validation = (info.get("outputs") or {}).get("validation") or {}
    per_class = validation.get("iou") or {}
    parts = [f"{k} {v:.2f}" if v is not None else f"{k} n/a (no validation polygons)"
             for k, v in per_class.items()]
    return ", ".join(parts) or "n/a (no validation polygons)"
