"""The dock's report of the selected job: scores, warnings and the package's plots.

Everything shown comes through the backend's API (the job and its files), so the view is
the same for a backend on this machine and one on a colleague's GPU server."""

from __future__ import annotations

import html
from pathlib import Path

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

PLOTS = ("training_curve.png", "confusion_matrix.png")
THUMB_PX = 140


def report_html(job: dict) -> str:
    """A short report of a job: what it did, its scores, its warnings, where its files are."""
    outputs = job.get("outputs") or {}
    lines = [f"<b>{html.escape(str(job.get('type', 'job')))}</b> "
             f"{html.escape(str(job.get('state', '?')))}: {html.escape(job.get('message') or '')}"]
    validation = outputs.get("validation") or {}
    if job.get("type") == "finetune":
        quick = bool((job.get("params") or {}).get("quick"))
        lines.append("training: " + ("quick (a linear classifier on the encoder's features)"
                                     if quick else "full (decoder trained)"))
    if validation:
        lines.append(_scores(validation))
    change = outputs.get("change") or {}
    if change:  # a change model: any change against no change, on the held-out polygons
        lines.append("change: " + ", ".join(
            f"{key} {'n/a' if change.get(key) is None else f'{change[key]:.2f}'}"
            for key in ("f1", "precision", "recall")))
    if job.get("type") == "detect-change" and outputs.get("polygon_count") is not None:
        lines.append(f"{outputs['polygon_count']} changed regions")
    areas = outputs.get("class_area_m2") or {}
    if areas:
        lines.append("area: " + ", ".join(f"{html.escape(k)} {v / 1e4:.2f} ha"
                                          for k, v in areas.items()))
    for warning in outputs.get("warnings") or []:
        lines.append(f"<span style='color:#9a6700'>⚠ {html.escape(str(warning))}</span>")
    run_s = (job.get("timings") or {}).get("run_s")
    if run_s is not None:
        lines.append(f"ran {run_s:.1f} s")
    return "<br>".join(lines)


def same_labels(job: dict, jobs: list[dict]) -> list[dict]:
    """The succeeded fine-tunes on the same polygons and rasters as `job`, itself included,
    oldest first: what the report compares (quick beside full)."""
    params = job.get("params") or {}

    def key(j: dict) -> tuple:
        p = j.get("params") or {}
        return str(p.get("labels")), tuple(map(str, p.get("rasters") or ())), p.get("class_field")

    if job.get("type") != "finetune" or not params.get("labels"):
        return []
    return sorted((j for j in jobs if j.get("type") == "finetune" and j.get("state") == "succeeded"
                   and key(j) == key(job)), key=lambda j: str((j.get("timings") or {}).get("created", "")))


def comparison_html(runs: list[dict]) -> str:
    """mIoU and time of each fine-tune on these labels, quick and full side by side."""
    if len(runs) < 2:
        return ""
    rows = []
    for run in runs:
        params, outputs = run.get("params") or {}, run.get("outputs") or {}
        miou = (outputs.get("validation") or {}).get("mean_iou")
        seconds = (run.get("timings") or {}).get("run_s")
        rows.append(f"<tr><td>{html.escape(Path(str(params.get('out', '?'))).name)}</td>"
                    f"<td>{'quick' if params.get('quick') else 'full'}</td>"
                    f"<td align='right'>{'n/a' if miou is None else f'{miou:.2f}'}</td>"
                    f"<td align='right'>{'' if seconds is None else f'{seconds:.0f} s'}</td></tr>")
    return ("<b>on these labels</b><table><tr><th align='left'>model</th><th>training</th>"
            f"<th>mIoU</th><th>time</th></tr>{''.join(rows)}</table>")


def _scores(validation: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td align='right'>"
        f"{'n/a (no validation polygons)' if iou is None else f'{iou:.2f}'}</td></tr>"
        for name, iou in (validation.get("iou") or {}).items())
    mean = validation.get("mean_iou")
    accuracy = validation.get("overall_accuracy")
    head = ", ".join(part for part in (
        f"mIoU {mean:.2f}" if mean is not None else "",
        f"overall accuracy {accuracy:.2f}" if accuracy is not None else "") if part)
    return f"{head}<table><tr><th align='left'>class</th><th>IoU</th></tr>{rows}</table>"


class ReportView(QGroupBox):
    """Report of the selected job; the plots as thumbnails, their size in the tooltip."""

    def __init__(self, parent=None) -> None:
        super().__init__("Report", parent)
        layout = QVBoxLayout(self)
        self.text = QLabel("select a job to see its report")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text)
        plots = QHBoxLayout()
        self.plots: dict[str, QLabel] = {}
        for name in PLOTS:
            label = QLabel()
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            plots.addWidget(label)
            self.plots[name] = label
        layout.addLayout(plots)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setToolTip("Open the selected job's output folder")
        self.open_folder_button.setEnabled(False)
        layout.addWidget(self.open_folder_button)

    def show_job(self, job: dict, images: dict[str, bytes], folder: str | None,
                 others: list[dict] | None = None) -> None:
        """`others`: the jobs the dock knows, for the comparison of fine-tunes."""
        compared = comparison_html(same_labels(job, others or []))
        self.text.setText(report_html(job) + (f"<br>{compared}" if compared else ""))
        for name, label in self.plots.items():
            pix = QPixmap()
            if name in images and pix.loadFromData(images[name]):
                label.setPixmap(pix.scaledToWidth(THUMB_PX, Qt.TransformationMode.SmoothTransformation))
                label.setToolTip(f"{name} ({pix.width()} x {pix.height()} px)")
            else:
                label.clear()
                label.setToolTip("")
        self.open_folder_button.setEnabled(bool(folder))
        self.open_folder_button.setToolTip(folder or "this job wrote no folder here")
