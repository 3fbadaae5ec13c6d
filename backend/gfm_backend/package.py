"""The model package: a folder with `model.json`, `model.safetensors`, `model.onnx`, `report.json`.

`model.json` is the contract between fine-tuning, classification, the service and the
plugin; the same facts go into the ONNX file as metadata props (with the keys other
QGIS tools such as Deepness read) so the ONNX file alone is enough to run the model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError

FORMAT_VERSION = 1
CHANGE_TASK = "change_detection"
TASKS = ("segmentation", "scene_classification", CHANGE_TASK)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A palette that stays readable on imagery; class i gets PALETTE[i % len].
PALETTE = (
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628",
    "#f781bf", "#999999", "#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854",
)
BACKGROUND_COLOR = "#d9d9d9"


@dataclass
class ClassInfo:
    id: int
    name: str
    color: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, int) or not isinstance(self.name, str) \
                or not re.fullmatch(r"#[0-9a-fA-F]{6}", str(self.color)):
            raise ValueError(f"classes: each class needs an integer id, a name and a colour "
                             f"#rrggbb, got {self.id!r}, {self.name!r}, {self.color!r}")

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


MAX_CLASSES = 255  # class rasters are uint8 with 255 for nodata


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_spec_numbers(spec: ModelSpec) -> None:
    """The fields a wrong value of would give silent nonsense (all class 0, NaN confidence)."""
    if (not isinstance(spec.bands, list | tuple) or not spec.bands
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in spec.bands)):
        raise ValueError(f"bands: give a list of 1-based band numbers, got {spec.bands!r}")
    for name in ("scale_offset", "scale", "mean", "std", "after_scale_offset", "after_scale"):
        values = getattr(spec, name)
        if values is None and name.startswith("after_"):
            continue
        if (not isinstance(values, list | tuple) or len(values) != len(spec.bands)
                or not all(_is_number(v) for v in values)):
            raise ValueError(f"{name}: give {len(spec.bands)} finite numbers (one per band), "
                             f"got {values!r}")
    if any(v == 0 for v in [*spec.scale, *(spec.after_scale or ())]) or any(v <= 0 for v in spec.std):
        raise ValueError("scale and std must be non-zero (std positive): a zero scale maps every "
                         "pixel to the same value")
    if spec.gsd_m is not None and not (_is_number(spec.gsd_m) and spec.gsd_m > 0):
        raise ValueError(f"gsd_m: give a positive pixel size in metres (or null), got {spec.gsd_m!r}")
    if not (isinstance(spec.tile_size, int) and 32 <= spec.tile_size <= 8192):
        raise ValueError(f"tile_size: give whole pixels from 32 to 8192, got {spec.tile_size!r}")
    if not (isinstance(spec.tile_overlap, int) and 0 <= spec.tile_overlap <= spec.tile_size // 2):
        raise ValueError(f"tile_overlap: give whole pixels from 0 to half the tile, "
                         f"got {spec.tile_overlap!r}")
    if not isinstance(spec.encoder, dict) or not isinstance(spec.head, dict):
        raise ValueError("encoder and head: give objects")
    if spec.infer_tile_size is not None:
        _check_inference_tiles(spec, spec.infer_tile_size, spec.infer_tile_overlap or 0)


def _check_inference_tiles(spec: ModelSpec, size: int, overlap: int) -> None:
    grid = spec.tile_grid
    if not (isinstance(size, int) and 0 < size <= 8192 and size % grid == 0):
        raise ValueError(f"inference tile: give a multiple of {grid} px (the encoder's window "
                         f"grid) up to 8192, got {size!r}")
    if not (isinstance(overlap, int) and 0 <= overlap <= size // 2):
        raise ValueError(f"inference tile overlap: give whole pixels from 0 to half the tile "
                         f"({size // 2}), got {overlap!r}")


@dataclass
class ModelSpec:
    """Everything needed to turn raster pixels into model input and outputs into classes."""

    task: str
    classes: list[ClassInfo]
    encoder: dict[str, Any]
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    # raw value -> (value - offset) / scale -> 0..1, per band
    scale_offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    scale: list[float] = field(default_factory=lambda: [255.0, 255.0, 255.0])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    gsd_m: float | None = None
    tile_size: int = 192
    tile_overlap: int = 48
    head: dict[str, Any] = field(default_factory=dict)
    name: str = "model"
    description: str = ""
    format_version: int = FORMAT_VERSION
    # change detection: AFTER's own scaling when its pixel values differ from BEFORE's
    # (another sensor or data type); None means BEFORE's
    after_scale_offset: list[float] | None = None
    after_scale: list[float] | None = None
    # the tiles classification runs at, when not the training chips: the Swin works at
    # any multiple of its window grid, and a larger tile overlaps less (576/64 sees 1.27x
    # the pixels, 192/48 1.78x); None means tile_size / tile_overlap. `gfm export
    # --tile-size` sets them. Fine-tuning leaves them None: larger tiles measured 0.5-4.5
    # mIoU points worse on models trained on 192 px chips (see the README)
    infer_tile_size: int | None = None
    infer_tile_overlap: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: unknown task {self.task!r}; expected one of {TASKS}")
        if not isinstance(self.classes, list | tuple) or not 1 <= len(self.classes) <= MAX_CLASSES:
            raise ValueError(f"classes: give a list of 1 to {MAX_CLASSES} classes")
        self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in self.classes]
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"classes: class ids must be 0..{len(ids) - 1} in order, got {ids}")
        _check_spec_numbers(self)

    @property
    def tile_grid(self) -> int:
        """Tile sizes the encoder runs exactly at are multiples of this (its last stage's
        stride times its window: 192 for the GFM Swin)."""
        enc = self.encoder
        stages = len(enc.get("depths", (2, 2, 2, 2)))
        return int(enc.get("patch_size", 4)) * 2 ** (stages - 1) * int(enc.get("window_size", 6))

    def for_inference(self, tile: int | None = None, overlap: int | None = None) -> ModelSpec:
        """This spec with `tile_size`/`tile_overlap` at the tiles to run: the ones given,
        else the package's inference tiles, else its training chips. Scene models keep
        their tiles (a tile is the scene they label)."""
        if self.task == "scene_classification":
            return self
        size = tile or self.infer_tile_size or self.tile_size
        default = self.infer_tile_overlap if size == self.infer_tile_size else None
        if default is None:
            default = self.tile_overlap if size == self.tile_size else size // 9
        spec = replace(self, tile_size=size, tile_overlap=default if overlap is None else overlap)
        _check_inference_tiles(spec, size, spec.tile_overlap)
        return spec

    @property
    def inputs(self) -> int:
        """Images the network takes: two dates for change detection, else one."""
        return 2 if self.task == CHANGE_TASK else 1

    @property
    def input_channels(self) -> int:
        """Channels of the network's one input tensor: each date's bands, one after another."""
        return len(self.bands) * self.inputs

    def input_scaling(self) -> tuple[list[float], list[float]]:
        """(offset, scale) per input channel: BEFORE's bands, then AFTER's for a pair."""
        if self.inputs == 1:
            return list(self.scale_offset), list(self.scale)
        return (list(self.scale_offset) + list(self.after_scale_offset or self.scale_offset),
                list(self.scale) + list(self.after_scale or self.scale))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise ValueError(f"expected an object with task, classes, bands..., got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def onnx_metadata(self) -> dict[str, str]:
        """Metadata props for model.onnx: ours in full plus the keys other QGIS tools read."""
        tiles = self.for_inference()
        return {
            "gfm_model_json": json.dumps(self.to_json()),
            "model_type": {"segmentation": "Segmentor", "change_detection": "ChangeDetector"}.get(
                self.task, "Recognition"),
            "class_names": json.dumps({str(c.id): c.name for c in self.classes}),
            # Deepness expresses resolution in cm/px and overlap in percent
            "resolution": json.dumps(round(self.gsd_m * 100, 3) if self.gsd_m else None),
            "tiles_size": json.dumps(tiles.tile_size),
            "tiles_overlap": json.dumps(round(100 * tiles.tile_overlap / tiles.tile_size)),
            "standardization_mean": json.dumps(self.mean),
            "standardization_std": json.dumps(self.std),
        }


# Colours a map reader expects for common land-cover names (matched as words in the name).
CONVENTIONAL_COLORS = (
    (("water", "hydro", "river", "lake", "sea"), "#3a78c2"),
    (("forest", "tree", "wood", "vegetation"), "#2f7d32"),
    (("grass", "meadow", "pasture"), "#9ccc65"),
    (("field", "crop", "farm", "agri"), "#e6c35c"),
    (("building", "built", "roof", "urban", "man"), "#d9534f"),
    (("road", "street", "paved", "train", "rail"), "#7f7f7f"),
    (("bare", "soil", "sand"), "#c49a6c"),
    (("snow", "ice", "cloud"), "#f0f0f0"),
)


def _conventional_color(name: str) -> str | None:
    words = name.lower().replace("-", " ").replace("_", " ").split()
    for keys, color in CONVENTIONAL_COLORS:
        if any(w.startswith(k) for w in words for k in keys):
            return color
    return None


def _distinct(color: str, taken: list[str], min_distance: float = 90.0) -> bool:
    """Far enough (RGB distance) from every colour taken to tell apart on a map."""
    def rgb(c: str) -> tuple[int, ...]:
        return tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))

    return all(math.dist(rgb(color), rgb(t)) >= min_distance for t in taken)


def default_classes(names: list[str], background: bool = False) -> list[ClassInfo]:
    """Class list with ids in order: conventional colours for common land-cover names,
    then distinct palette colours for the others (none too close to another, while the
    palette lasts); `background` greys out class 0."""
    colors: dict[int, str] = {0: BACKGROUND_COLOR} if background and names else {}
    for i, name in enumerate(names):  # conventional colours first: "building" stays red
        found = _conventional_color(str(name))
        if i not in colors and found is not None and _distinct(found, list(colors.values())):
            colors[i] = found
    for i in range(len(names)):
        if i not in colors:
            taken = list(colors.values())
            spare = [p for p in PALETTE if p not in taken] or list(PALETTE)
            colors[i] = next((p for p in spare if _distinct(p, taken)), spare[0])
    return [ClassInfo(id=i, name=str(n), color=colors[i]) for i, n in enumerate(names)]


def read_spec(model_dir: Path) -> ModelSpec:
    """Read `model.json` of a model package with a message naming the folder when it is wrong."""
    model_dir = Path(model_dir)
    path = model_dir / "model.json"
    if not model_dir.exists():
        raise InputError(model_dir, "model folder does not exist")
    if not path.is_file():
        raise InputError(model_dir, "not a model package (no model.json inside)")
    try:
        return ModelSpec.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(path, f"invalid model description: {exc}") from exc
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc


def read_change_spec(model_dir: Path) -> ModelSpec:
    """`read_spec`, refusing a model of another task (naming the folder)."""
    spec = read_spec(model_dir)
    if spec.task != CHANGE_TASK:
        raise InputError(model_dir, f"is a {spec.task.replace('_', ' ')} model, not a change "
                         "model; train one with gfm finetune-change")
    return spec


def write_spec(model_dir: Path, spec: ModelSpec) -> Path:
    from .atomic import write_text_atomic

    path = Path(model_dir) / "model.json"
    write_text_atomic(path, json.dumps(spec.to_json(), indent=2))
    return path
