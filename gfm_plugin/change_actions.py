"""What the "Detect changes" group's buttons do: detect changes between two dates, draw
change polygons, fine-tune a change model. Jobs run through the controller's Jobs panel,
local or on a remote backend (files uploaded, results downloaded) like classify."""

from __future__ import annotations

from qgis.core import QgsProject, QgsRasterLayer

from . import layers
from .output_folders import folder_for, new_file, new_folder_name, safe_name

CHANGE_CLASS = "change"


class ChangeActions:
    def __init__(self, controller) -> None:
        self.c = controller
        box = controller.dock.change
        self.box = box
        box.detect_button.clicked.connect(self.detect)
        box.new_labels_button.clicked.connect(self.new_labels_layer)
        box.finetune_button.clicked.connect(self.finetune)
        box.labels_combo.layerChanged.connect(self._preselect_field)

    def _pair(self) -> tuple[QgsRasterLayer, QgsRasterLayer, str, str] | None:
        """Both dates as files, or None after saying what is missing."""
        before, after = self.box.before_combo.currentLayer(), self.box.after_combo.currentLayer()
        if before is None or after is None or before.id() == after.id():
            self.c.error("pick two different raster layers: the earlier date (Before) and the "
                         "later one (After)")
            return None
        paths = [layers.raster_file_path(r) for r in (before, after)]
        unsaved = [r.name() for r, p in zip((before, after), paths, strict=True) if p is None]
        if unsaved:
            self.c.error(f"change detection reads files: {', '.join(unsaved)} is not a file "
                         "(save it as GeoTIFF first)")
            return None
        return before, after, paths[0] or "", paths[1] or ""

    def detect(self, after_layer: QgsRasterLayer | None = None):
        """Detect changes between the chosen dates (`after_layer`: from a layer's menu)."""
        if after_layer is not None:
            self.box.after_combo.setLayer(after_layer)
            self.box.setCollapsed(False)
        model = self.box.model_combo.currentData()
        pair = self._pair()
        if pair is None:
            return None
        if not model:
            self.c.error("no change model: draw change polygons and Fine-tune for changes first")
            return None
        before, after, before_path, after_path = pair
        name = self.box.pair_name()
        out = new_folder_name(folder_for("results", self.c.settings.results_dir),
                              f"{before.name()}-to-{after.name()}")
        remote = self.c.settings.mode == "remote"
        params = {"before": before_path, "after": after_path, "model": model["path"],
                  "out": {"output": out.name} if remote else str(out)}

        def loaded(info: dict) -> None:
            files = (info.get("outputs") or {}).get("files") or str(out)
            layers.add_change_results(files, name)
            count = (info.get("outputs") or {}).get("polygon_count")
            self.c.info(f"changes {name}: {count if count is not None else 'the'} changed regions "
                        f"added to the group {name!r}")
            self.c.msg.show_warnings(f"Detect changes {name}", info)

        return self.c.run_job(f"Detect changes {name}", "detect-change", params, loaded,
                              uploads=("before", "after") if remote else (), download_to=out)

    def new_labels_layer(self):
        """A change-labels layer in BEFORE's CRS whose class drop-down holds the kinds typed."""
        before = self.box.before_combo.currentLayer()
        crs = before.crs() if before is not None else QgsProject.instance().crs()
        kinds = layers.typed_class_names(self.box.kinds_edit.text()) or [CHANGE_CLASS]
        path = new_file(folder_for("labels", self.c.settings.results_dir), "gfm_changes", ".gpkg")
        layer = layers.create_labels_layer(str(path), crs, kinds, name="GFM change labels")
        self.box.kinds_edit.clear()
        self.box.labels_combo.setLayer(layer)
        self.box.field_combo.setField(layers.LABEL_FIELD if len(kinds) > 1 else "")
        if self.c.iface is not None:
            self.c.iface.setActiveLayer(layer)
        self.c.info(f"draw polygons where something changed in {layer.name()} ({path.name})")
        return layer

    def _preselect_field(self, layer) -> None:
        self.box.field_combo.setLayer(layer)
        field = layers.class_field_for(layer) if layer is not None else None
        if field and len(layer.uniqueValues(layer.fields().indexFromName(field))) > 1:
            self.box.field_combo.setField(field)  # several kinds of change drawn
        else:
            self.box.field_combo.setField("")

    def finetune(self):
        pair = self._pair()
        labels = self.box.labels_combo.currentLayer()
        if pair is None:
            return None
        if labels is None:
            self.c.error("pick the layer of change polygons")
            return None
        if not self.c.edits_saved(labels, "change polygons"):
            return None
        labels_path = layers.vector_file_path(labels)
        if labels_path is None:
            self.c.error(f"{labels.name()} is not saved to a file: save it (e.g. as GeoPackage)")
            return None
        before, _, before_path, after_path = pair
        name = safe_name(self.box.model_name_edit.text().strip() or f"{before.name()}-changes")
        target = self.c._model_folder(name)
        if target is None:
            return None
        out, overwrite = target
        params = {"before": before_path, "after": after_path,
                  "labels": labels_path, "out": out, "overwrite": overwrite,
                  "epochs": self.c.dock.epochs_spin.value(), **self.c.dock.encoder_params()}
        field = self.box.field_combo.currentField()
        if field:
            params["class_field"] = field
        problem = layers.class_problem(labels, field or None, one_class_ok=True)
        if problem and not self.c.confirm(f"{problem}. Train anyway?"):
            return None

        def registered(info: dict) -> None:
            self.c.refresh_models()
            change = (info.get("outputs") or {}).get("change") or {}
            f1 = change.get("f1")
            self.c.info(f"change model {name} trained; change F1 "
                        + (f"{f1:.2f}" if f1 is not None else "n/a (no validation polygons)"))
            self.c.msg.show_warnings(f"Fine-tune for changes {name}", info)

        remote = self.c.settings.mode == "remote"
        return self.c.run_job(f"Fine-tune for changes {name}", "finetune-change", params,
                              registered, uploads=("before", "after", "labels") if remote else ())
