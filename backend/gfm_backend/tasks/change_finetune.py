"""Fine-tune for changes: a change model from polygons drawn where something changed.

The polygons may be drawn on either date, in any CRS; they are placed on BEFORE's grid,
where AFTER is warped (`data.pair`). Pixels outside them are "no change" by default
(`unlabeled=background`) or unknown (`ignore`). Without a class field the model is binary
(no change / change); with one, each value is a kind of change ("new building",
"cleared"). Splitting, chips, two-stage training and the package are fine-tuning's own
(`finetune.train_package`); what is particular to a pair is here: chips read from both
dates, the model's inputs and scaling for each date, the augmentation that teaches it
that light and season are not change, and change scores (precision, recall, F1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from ..data.chips import ChipReader
from ..data.pair import open_pair
from ..data.raster import default_bands, pixel_size_m
from ..models.network import default_head_channels
from ..outputs import MODEL, staged_output
from ..package import CHANGE_TASK, ModelSpec, default_classes
from ..progress import Progress, silent
from .change_augment import change_augment
from .change_scores import change_scores
from .finetune import TrainingSetup, input_scaling, train_package
from .params import FinetuneChangeParams

NO_CHANGE, CHANGE = "no change", "change"


def finetune_change(params: FinetuneChangeParams, progress: Progress | None = None) -> dict[str, Any]:
    """Run the fine-tune-for-changes job; returns the report also written to the package."""
    progress = progress or silent()
    inputs: dict[str, Path | None] = {
        "labels": params.labels, "before": params.before, "after": params.after,
        "encoder": Path(params.encoder) if params.encoder else None}
    with staged_output(params.out, MODEL, params.overwrite, inputs, last=("model.json",)) as stage:
        report = train_package(params, _setup(params), stage, progress)
    progress(1.0, "done")
    return report


def _setup(params: FinetuneChangeParams) -> TrainingSetup:
    with rasterio.open(params.before) as ds:
        bands = params.bands or default_bands(ds)
    with open_pair(params.before, params.after, bands, params.after_bands) as pair:
        after_bands = pair.after_bands  # checked now: a wrong band fails before training
    binary = params.class_field is None  # change is symmetric: the dates may swap

    def make_spec(names: list[str], background: bool, encoder: Any) -> ModelSpec:
        return _change_spec(params, bands, after_bands, names, background, encoder)

    def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        return change_augment(x, y, rng, swap=binary)

    return TrainingSetup(
        [Path(params.before)], make_spec,
        {"before": str(params.before), "after": str(params.after), "after_bands": after_bands},
        open_source=lambda path: _pair_source(params, bands, after_bands),
        background_name=NO_CHANGE, single_name=CHANGE, augment=augment, scores=change_scores)


@contextmanager
def _pair_source(params: FinetuneChangeParams, bands: list[int],
                 after_bands: list[int]) -> Iterator[tuple[rasterio.DatasetReader, ChipReader]]:
    with open_pair(params.before, params.after, bands, after_bands) as pair:
        yield pair.before, pair.read


def _change_spec(params: FinetuneChangeParams, bands: list[int], after_bands: list[int],
                 names: list[str], background: bool, encoder: Any) -> ModelSpec:
    """model.json of a change model: both dates' scaling, BEFORE's pixel size, UPerNet."""
    with open_pair(params.before, params.after, bands, after_bands) as pair:
        offset, scale = input_scaling(pair.before, bands)
        after_offset, after_scale = input_scaling(pair.after, after_bands)
        gsd = pixel_size_m(pair.before)
    same = (after_offset, after_scale) == (offset, scale)
    tile = params.tile_size or encoder.config.img_size
    return ModelSpec(
        task=CHANGE_TASK, classes=default_classes(names, background=background),
        encoder=encoder.config.to_json(), bands=bands, scale_offset=offset, scale=scale,
        after_scale_offset=None if same else after_offset, after_scale=None if same else after_scale,
        gsd_m=gsd, tile_size=tile, tile_overlap=tile // 4,
        head={"type": "siamese-upernet",
              "channels": params.head_channels or default_head_channels(encoder.config.embed_dim)},
        name=params.name or Path(params.out).name,
        description=f"change model fine-tuned on {params.labels.name}"
        + (f" field {params.class_field}" if params.class_field else ""),
    )
