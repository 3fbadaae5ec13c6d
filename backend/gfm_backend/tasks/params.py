"""The parameter models of the task functions: one per job type, the one declaration
from which the command line, the service and the plugin take their options.

They live here, beside the task modules rather than in them, because the service imports
them at startup and must stay light (the task modules load rasterio and torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, Strict, field_validator

from ..outputs import OVERWRITE_HELP
from ..parameters import (
    MAX_BATCH,
    MAX_EPOCHS,
    Bands,
    Cli,
    Config,
    Device,
    JobParams,
    Kind,
    ParamError,
    Seed,
    Sha256,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    as_list,
)

# Options several job types take, each declared once.
ModelRef = Annotated[Path, Kind("model"), Field(
    description="model package folder, or a name GET /models lists")]
OutFolder = Annotated[Path, Kind("out_dir"), Field(description="output folder", title="Output folder")]
Runtime = Annotated[Literal["auto", "torch", "torch-bf16", "torch-compiled", "torch-compiled-int8",
                            "onnx", "onnx-int8"], Field(
    description="auto (the fastest that keeps the map here: torch-bf16 where the CPU has "
    "native bf16, torch-compiled there for rasters of 100 megapixels and more (its int8 "
    "variant for base on CPUs without AMX), "
    "onnx-int8 on other CPUs when the package has it, else torch), "
    "torch, torch-bf16 (bf16 on a CPU as well as on CUDA: about 3x faster on "
    "CPUs with AMX, such as Intel Xeon 4th generation and later), torch-compiled (that "
    "network compiled for this CPU, once per model, tile and batch size, about 1-2 "
    "minutes, then cached; needs a C++ compiler), torch-compiled-int8 (the same with its "
    "Linear layers in int8: faster again for base on CPUs without AMX), onnx (ONNX "
    "Runtime), or "
    "onnx-int8 (its MatMuls in int8: faster on CPUs, needs model.int8.onnx from gfm export "
    "--int8)")]
InferTile = Annotated[int | None, Strict(), Field(
    ge=32, le=8192, description="tile size in px (a multiple of 192 for the GFM Swin; default: "
    "the model's inference tile)")]
InferOverlap = Annotated[int | None, Strict(), Field(
    ge=0, le=4096, description="tile overlap in px (default: the model's)")]
BatchSize = Annotated[int, Strict(), Field(ge=1, le=MAX_BATCH)]
MinArea = Annotated[float, Strict(), Cli(aliases=("min_area_m2",)), Field(
    ge=0, le=1e12, title="Minimum polygon area (m²)",
    description="merge regions smaller than this (m2) into their neighbours")]
Simplify = Annotated[float, Strict(), Field(
    ge=0, le=1e7, description="polygon simplification tolerance in CRS units (0: none)")]
Before = Annotated[Path, Kind("raster"), Cli(positional=True), Field(
    description="the earlier image (the result is on its grid)")]
After = Annotated[Path, Kind("raster"), Cli(positional=True), Field(
    description="the later image (any CRS, pixel size and extent: warped onto BEFORE)")]
AfterBands = Annotated[Bands | None, Field(
    description="1-based bands of AFTER in the order BEFORE's are read (default: matched by "
    "colour interpretation, else the same numbers)")]


class ClassifyParams(JobParams):
    """`gfm classify` / a classify job."""

    job: ClassVar[str] = "classify"
    raster: Annotated[Path, Kind("raster"), Cli(positional=True)] = Field(
        description="raster to classify")
    model: ModelRef
    out: OutFolder
    runtime: Runtime = "auto"
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch_size: BatchSize = 8
    tile_size: InferTile = None
    tile_overlap: InferOverlap = None
    min_area: MinArea = 0.0
    simplify: Simplify = 0.0
    no_polygons: Annotated[StrictBool, Cli(negation="polygons")] = Field(
        False, description="write no polygons.gpkg")
    overwrite: StrictBool = Field(False, description=OVERWRITE_HELP)


class DetectChangeParams(JobParams):
    """`gfm detect-change` / a detect-change job: a change model over two dates."""

    job: ClassVar[str] = "detect-change"
    before: Before
    after: After
    model: ModelRef
    out: OutFolder
    after_bands: AfterBands = None
    runtime: Runtime = "auto"
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch_size: BatchSize = 8
    tile_size: InferTile = None
    tile_overlap: InferOverlap = None
    min_area: MinArea = 0.0
    simplify: Simplify = 0.0
    overwrite: StrictBool = Field(False, description=OVERWRITE_HELP)


class SuggestParams(JobParams):
    """`gfm suggest` / a suggest job: where to draw the next training polygons."""

    job: ClassVar[str] = "suggest"
    raster: Annotated[Path, Kind("raster"), Cli(positional=True)] = Field(
        description="raster to find places to label on")
    model: ModelRef
    out: Annotated[Path, Kind("out_file", suffix=".gpkg")] = Field(
        description="GeoPackage of suggestions to write", title="Suggestions file")
    count: StrictInt = Field(20, ge=1, le=1000, description="how many places to suggest")
    labels: Annotated[Path | None, Kind("vector")] = Field(
        None, description="polygons already drawn, to stay away from (default: those the "
        "model was trained on, when that file is still there)")
    cell: StrictInt | None = Field(None, ge=16, le=8192, description="side of a suggested "
                                   "square in raster px (default: half the model's tile)")
    runtime: Runtime = "auto"
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch_size: BatchSize = 8
    overwrite: StrictBool = Field(False, description="replace an existing file at out")


class TrainingParams(JobParams):
    """What every training job on drawn polygons takes (fine-tune, fine-tune for changes):
    declared once here, so the two cannot drift apart."""

    labels: Annotated[Path, Kind("vector")] = Field(description="polygon file (GPKG, GeoJSON, SHP...)")
    class_field: StrictStr | None = Field(
        None, description="field holding each polygon's class (default: every polygon is one "
        "class named after the layer, e.g. building footprints)")
    out: Annotated[Path, Kind("out_dir")] = Field(description="model package folder to write",
                                                  title="Model folder")
    encoder: Annotated[StrictStr | None, Kind("weights"), Cli(path_text=True)] = Field(
        None, description="encoder weights: a name gfm weights list shows, or a file (gfm.pth, "
        "a Swin checkpoint, a model package)")
    config: Config = Field("base", description="encoder shape when no encoder is given (random init)")
    unlabeled: Literal["ignore", "background"] = "ignore"
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    bands: Bands | None = Field(None, description="1-based raster bands to read")
    epochs: StrictInt = Field(30, ge=0, le=MAX_EPOCHS, description="epochs of head training")
    encoder_epochs: StrictInt = Field(0, ge=0, le=MAX_EPOCHS, description="then epochs of "
                                      "whole-network fine-tuning (layer-wise LR decay)")
    batch_size: StrictInt = Field(8, ge=1, le=MAX_BATCH)
    chips: StrictInt = Field(256, ge=1, le=100_000,
                             description="training chips to cut (memory: about 0.5 MB each at 192 px)")
    lr: Annotated[StrictFloat, Cli(internal=True)] = Field(1e-3, gt=0)
    encoder_lr: Annotated[StrictFloat, Cli(internal=True)] = Field(1e-4, gt=0)
    layer_decay: Annotated[StrictFloat, Cli(internal=True)] = Field(0.9, gt=0, le=1)
    patience: StrictInt = Field(8, ge=1, le=MAX_EPOCHS)
    val_fraction: Annotated[StrictFloat, Cli(internal=True)] = Field(0.2, ge=0, lt=1)
    tile_size: StrictInt | None = Field(None, ge=64, le=1536, multiple_of=32,
                                        description="chip size in px, a multiple of 32 "
                                        "(default: the encoder's)")
    head_channels: StrictInt | None = Field(None, ge=8, le=1024,
                                            description="UPerNet width (default 256 for base)")
    seed: Seed = 0
    no_onnx: Annotated[StrictBool, Cli(negation="onnx")] = Field(False, title="No ONNX file",
                                                                 description="write no model.onnx")
    name: Annotated[StrictStr | None, Cli(internal=True)] = None
    overwrite: StrictBool = Field(False, description=OVERWRITE_HELP)


class FinetuneParams(TrainingParams):
    """`gfm finetune` / a finetune job."""

    job: ClassVar[str] = "finetune"
    rasters: Annotated[list[Path], Kind("rasters"), Cli(positional=True, aliases=("raster",)),
                       BeforeValidator(as_list)] = Field(
        min_length=1, description="raster(s) to train on (a list, or one path)")
    task: Literal["segmentation", "scene_classification"] = "segmentation"
    quick: StrictBool = Field(False, description="train no network: a logistic regression on "
                              "the frozen encoder's features (seconds to minutes on a CPU; "
                              "epochs are not used)")


class FinetuneChangeParams(TrainingParams):
    """`gfm finetune-change` / a finetune-change job: a change model from polygons drawn
    where something changed between two dates."""

    job: ClassVar[str] = "finetune-change"
    before: Before
    after: After
    class_field: StrictStr | None = Field(
        None, description="field holding each polygon's kind of change (e.g. new building, "
        "cleared); default: one class, change")
    unlabeled: Literal["ignore", "background"] = Field(
        "background", description="pixels outside the polygons: no change (background) or "
        "unknown (ignore)")
    after_bands: AfterBands = None


class GeopileParams(JobParams):
    """`gfm geopile build` / a geopile job."""

    job: ClassVar[str] = "geopile"
    src_folder: Annotated[Path, Kind("dir"), Cli(positional=True)] = Field(description="folder of imagery")
    out: Annotated[Path, Kind("out_dir")] = Field(description="GeoPile folder to create or grow",
                                                  title="GeoPile folder")
    chip: StrictInt = Field(192, ge=32, le=2048, description="chip size in px (larger than 192 "
                            "leaves room for random resized crops; the paper uses 192)")
    bands: Bands | None = Field(None, description="1-based bands to use where a file has them: "
                                "R G B, or one for grey")
    dataset: StrictStr | None = Field(None, description="source dataset name (default: first "
                                      "folder below src_folder)")
    min_valid: StrictFloat = Field(0.75, gt=0, le=1, description="drop chips with a smaller "
                                   "fraction of valid (not nodata) pixels")
    blank_std: StrictFloat = Field(2.0, ge=0, le=255, description="drop chips whose every "
                                   "channel's standard deviation is below this")
    shard_chips: StrictInt = Field(1024, ge=1, le=1_000_000, description="chips per shard "
                                   "(new piles only)")
    workers: StrictInt = Field(0, ge=0, le=64, description="reader threads (0: up to 4)")

    @field_validator("bands")
    @classmethod
    def _rgb_or_grey(cls, bands: list[int] | None) -> list[int] | None:
        if bands is not None and len(bands) not in (1, 3):
            raise ParamError("bands", f"give three 1-based band numbers (R G B) or one (grey), "
                             f"got {bands}")
        return bands

    @property
    def reader_threads(self) -> int:
        return self.workers or max(1, min(4, os.cpu_count() or 1))


class PretrainParams(JobParams):
    """`gfm pretrain` / a pretrain job."""

    job: ClassVar[str] = "pretrain"
    pile_dir: Annotated[Path, Kind("dir"), Cli(positional=True)] = Field(description="GeoPile folder",
                                                                         title="GeoPile folder")
    out: Annotated[Path, Kind("out_dir")] = Field(description="run folder", title="Run folder")
    teacher: Annotated[StrictStr | None, Kind("weights", keywords=("none",)), Cli(path_text=True)] = Field(
        None, description="ImageNet-22k Swin checkpoint (the paper's teacher): a name gfm weights "
        "list shows or a file; or 'none' (MIM only)")
    config: Config = "base"
    batch: StrictInt = Field(128, ge=1, le=1_000_000, description="images per step per process",
                             title="Images per step")
    epochs: StrictFloat = Field(100, ge=0, le=100_000)
    max_steps: StrictInt | None = Field(None, ge=1, le=10**9,
                                        description="stop after this many steps (instead of epochs)")
    warmup_epochs: StrictFloat | None = Field(None, ge=0, le=100_000,
                                              description="default: the first 10 % of the run")
    resume: StrictBool = Field(False, description="continue the run in out exactly")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    checkpoint_every: StrictInt = Field(500, ge=1, le=10**9, description="steps between checkpoints")
    log_every: StrictInt = Field(10, ge=1, le=10**9)
    seed: Seed = 0
    # write each rank's chip indices (multi-process checks)
    record_chips: Annotated[StrictBool, Cli(internal=True, hidden_option=True)] = False
    bf16: Annotated[StrictBool | None, Cli(internal=True)] = None  # autocast; default: on for CUDA
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="window attention: eager, or sdpa (fused); auto: sdpa on CUDA")
    compile_blocks: StrictBool = Field(False, description="torch.compile each Swin block "
                                       "(faster steps after minutes of warm-up)")
    overwrite: StrictBool = Field(False, description="start afresh over a previous run in out "
                                  "(deletes that run's files only)")


class ExportParams(JobParams):
    """`gfm export` / an export job."""

    job: ClassVar[str] = "export"
    model_dir: Annotated[Path, Kind("model"), Cli(positional=True)] = Field(
        description="model package folder")
    out: Annotated[Path | None, Kind("out_file", suffix=".onnx")] = Field(
        None, description="default: MODEL_DIR/model.onnx")
    tile_size: InferTile = None
    int8: StrictBool = Field(False, description="also write the int8 model (ONNX Runtime's "
                             "dynamic quantization of the MatMuls) beside it, as *.int8.onnx")
    overwrite: StrictBool = Field(False, description="replace an existing file at out")


class WeightsGetParams(JobParams):
    """`gfm weights get` / a weights job: download encoder weights into the backend's store."""

    job: ClassVar[str] = "weights"
    source: Annotated[StrictStr, Cli(positional=True)] = Field(
        description="a catalog name (gfm weights list) or an http(s) address")
    name: StrictStr | None = Field(None, description="name to keep them under (default: the "
                                   "catalog name, or the file's name)")
    sha256: Sha256 | None = Field(None, description="the SHA-256 the file must have (default: "
                                  "the published one, where there is one)")
    mirror: Annotated[StrictStr | None, Cli(aliases=("from",))] = Field(
        None, description="fetch a catalog entry from this address instead (a mirror)")


class WeightsImportParams(JobParams):
    """`gfm weights import` / a weights-import job: copy a downloaded checkpoint into the store."""

    job: ClassVar[str] = "weights-import"
    file: Annotated[Path, Kind("path"), Cli(positional=True)] = Field(
        description="checkpoint file (gfm.pth, a Swin .pth or .safetensors)")
    name: StrictStr | None = Field(None, description="name to keep it under (default: the "
                                   "catalog name it is recognised as, or the file's name)")
