"""Dataset specs: a YAML file listing scenes (DEM, optional DTM, labels, split), paths relative to it.

Minimal form::

    name: amsterdam
    scenes:
      - id: ams
        dem: ahn3_bag_amsterdam_bag3d/dsm.tif
        dtm: ahn3_bag_amsterdam_bag3d/dtm.tif          # optional
        channels: {fml: fml.tif, returns: returns.tif}  # optional LiDAR channels
        labels:
          raster: ahn3_bag_amsterdam_bag3d/labels.tif  # class codes on the DEM grid
          classes: {buildings: 1, roads: 2}
          ignore: 255
        split: auto                                    # train | val | auto (default)
      - id: dc
        dem: opengeos_elevation/dsm.tif
        labels:
          vector: {buildings: opengeos_elevation/buildings.geojson}

A folder can stand in for a spec: each sub-folder holding ``dem.tif`` (or ``dsm.tif``) is a
scene, with ``dtm.tif``, ``labels.tif`` and ``buildings.*`` / ``roads.*`` vectors picked up
when present.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from demseg.errors import DemsegError

TASKS = ("buildings", "roads")
# classes a label raster may carry beside the tasks: learnt as auxiliary targets, never scored as a task
AUXILIARY_CLASSES = ("vegetation",)
DEFAULT_CLASSES = {"buildings": 1, "roads": 2}
LABEL_CODES = {"buildings": 1, "roads": 2, "vegetation": 3}  # demseg's own label rasters (synth, rasterize)
# per-pixel rasters a scene may carry beside its elevation, on the DEM grid (see demseg.data.normalise)
MAX_LABEL_CODE = 65535  # label rasters are uint8 or uint16 class codes
SCENE_CHANNELS = ("returns", "fml", "vegshare", "intensity")


class LabelSpec(BaseModel):
    """Where a scene's labels come from: a class-code raster on the DEM grid and/or vector files."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    raster: str | None = Field(None, description="Class-code raster on the DEM grid (path relative to the spec).")
    classes: dict[str, int | list[int]] = Field(
        default_factory=lambda: dict(DEFAULT_CLASSES),
        description="Task name -> class code in the raster, or a list of codes that together make the class "
                    "(e.g. roads: [11, 12] for carriageways and cycle paths; roads: 11 for carriageways only).")
    ignore: int | None = Field(255, description="Raster code for unknown / unlabelled pixels (excluded from loss).")
    vector: dict[str, str] = Field(default_factory=dict,
                                   description="Task name -> vector file (GeoJSON, GeoPackage, Shapefile) in any CRS.")
    coverage: Literal["extent", "hull"] = Field(
        "extent", description="Where vector labels speak for the background: extent (every pixel that is not a "
                              "feature is background) or hull (only inside the convex hull of the features, "
                              "grown by coverage_buffer_m; outside it is unknown). Use hull for footprint sets "
                              "mapped over part of a scene, so unmapped buildings do not count as errors.")
    coverage_buffer_m: float = Field(10.0, ge=0, description="Margin around the features' hull with coverage: hull.")
    road_width_m: float | None = Field(None, gt=0, description="Width used to buffer road lines without a width.")
    width_attribute: str = Field("width", description="Attribute of road lines holding their width in metres.")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(TASKS) - set(AUXILIARY_CLASSES))
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown}; known: {list(TASKS) + list(AUXILIARY_CLASSES)}")
        if any(isinstance(codes, list) and not codes for codes in value.values()):
            raise ValueError("a class needs at least one code")
        owner: dict[int, str] = {}
        for name, codes in value.items():
            for code in codes if isinstance(codes, list) else [codes]:
                if not 0 <= code <= MAX_LABEL_CODE:
                    raise ValueError(f"class code {name}: {code} is outside 0..{MAX_LABEL_CODE}, the codes a label "
                                     "raster (up to uint16) may use")
                if owner.get(code, name) != name:
                    raise ValueError(f"code {code} is given to both {owner[code]} and {name}: a pixel has one class")
                owner[code] = name
        return value

    @field_validator("ignore")
    @classmethod
    def _ignore_in_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_LABEL_CODE:
            raise ValueError(f"ignore code {value} is outside 0..{MAX_LABEL_CODE}, the codes a label raster (up to "
                             "uint16) may use")
        return value

    @model_validator(mode="after")
    def _ignore_is_no_class(self) -> LabelSpec:
        if self.ignore is not None and self.raster:
            named = sorted(name for name in self.classes if self.ignore in self.codes(name))
            if named:
                raise ValueError(f"ignore code {self.ignore} is also the code of {named[0]}: its pixels cannot be "
                                 "both unknown and a class; set ignore to the code of unlabelled pixels (or null)")
        return self

    def codes(self, name: str) -> list[int]:
        """The raster codes that make class ``name``."""
        codes = self.classes[name]
        return list(codes) if isinstance(codes, list) else [codes]

    @field_validator("vector")
    @classmethod
    def _known_tasks(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown}; known: {list(TASKS)}")
        return value


class SceneSpec(BaseModel):
    """One scene: an elevation raster with optional ground model and labels."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    id: str = Field(description="Unique scene id, used in tile ids.")
    dem: str = Field(description="Elevation GeoTIFF (DSM or nDSM); path relative to the spec.")
    dtm: str | None = Field(None, description="Optional bare-earth DTM on the same grid (enables nDSM recipes).")
    band: int | None = Field(None, ge=1, description="Band of a multi-band DEM file (1-based).")
    crs: str | None = Field(None, description="CRS for rasters that declare none, e.g. EPSG:2154.")
    nodata: float | None = Field(None, description="Extra nodata value when the file declares none.")
    channels: dict[str, str] = Field(
        default_factory=dict,
        description=f"Extra per-pixel rasters on the DEM grid, channel name -> path, e.g. the LiDAR channels "
                    f"that `demseg rasterize` writes; names: {list(SCENE_CHANNELS)}. A recipe naming one "
                    f"needs it in every scene.")
    labels: LabelSpec | None = None
    split: Literal["train", "val", "auto"] = Field("auto", description="Fixed split, or auto (spatial split).")


    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return safe_spec_name(value, "scene id")

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(SCENE_CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel name(s) {unknown}; known: {list(SCENE_CHANNELS)}")
        return value


def safe_spec_name(value: str, what: str) -> str:
    """``value`` if it can name a file inside an output folder (outputs are named after ids and names)."""
    if not re.fullmatch(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,127}", value or ""):
        raise ValueError(f"{what} {value!r} must be 1-128 characters without '/', '\\' or control characters, not "
                         "starting with '.' (outputs are named after it, inside the output folder)")
    return value


class DatasetSpec(BaseModel):
    """A named list of scenes; ``root`` is the folder that relative paths start from."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    name: str = "dataset"
    description: str | None = None
    scenes: list[SceneSpec] = Field(min_length=1)
    root: Path = Path(".")

    def path(self, relative: str) -> Path:
        """An absolute path for a path given relative to the spec."""
        path = Path(os.path.expanduser(relative))
        return path if path.is_absolute() else (self.root / path)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return safe_spec_name(value, "spec name")

    def files(self) -> list[Path]:
        """Every file the spec names (elevation, DTM, labels, vectors, channels), as absolute paths."""
        return [self.path(relative) for scene in self.scenes for _, relative in _scene_files(scene)]

    def tasks(self) -> list[str]:
        """Tasks that at least one scene labels."""
        found = set()
        for scene in self.scenes:
            if scene.labels is not None:
                found |= set(scene.labels.vector)
                if scene.labels.raster:
                    found |= set(scene.labels.classes)
        return [task for task in TASKS if task in found]


def load_spec(source: str | os.PathLike, crs: str | None = None) -> DatasetSpec:
    """Load a dataset spec from a YAML file, or build one from a folder of scenes."""
    source = Path(source)
    if not source.exists():
        raise DemsegError(f"dataset spec not found: {source}")
    spec = _spec_from_folder(source) if source.is_dir() else _spec_from_yaml(source)
    if crs is not None:
        for scene in spec.scenes:
            scene.crs = scene.crs or crs
    ids = [scene.id for scene in spec.scenes]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DemsegError(f"dataset spec {source}: duplicate scene id(s) {duplicates}")
    for scene in spec.scenes:
        for name, relative in _scene_files(scene):
            if not spec.path(relative).exists():
                raise DemsegError(f"dataset spec {source}: scene '{scene.id}' names a missing {name} file: "
                                  f"{spec.path(relative)}")
    return spec


def _scene_files(scene: SceneSpec) -> list[tuple[str, str]]:
    files = [("dem", scene.dem)]
    if scene.dtm:
        files.append(("dtm", scene.dtm))
    files += [(f"{name} channel", path) for name, path in scene.channels.items()]
    if scene.labels is not None:
        if scene.labels.raster:
            files.append(("label raster", scene.labels.raster))
        files += [(f"{task} vector", path) for task, path in scene.labels.vector.items()]
    return files


def _spec_from_yaml(path: Path) -> DatasetSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DemsegError(f"dataset spec {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise DemsegError(f"cannot read the dataset spec {path}: {exc.strerror or exc}") from exc
    if not isinstance(raw, dict):
        raise DemsegError(f"dataset spec {path} must be a mapping with a 'scenes' list")
    raw = dict(raw)
    raw["root"] = path.resolve().parent
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DemsegError(f"dataset spec {path}: {where}: {first['msg']}") from exc


def _find(folder: Path, stems: tuple[str, ...], suffixes: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            candidate = folder / f"{stem}{suffix}"
            if candidate.exists():
                return candidate
    return None


def _spec_from_folder(folder: Path) -> DatasetSpec:
    folder = folder.resolve()  # "." names its scenes and itself after the real folder
    yaml_file = folder / "dataset.yaml"
    if yaml_file.exists():
        return _spec_from_yaml(yaml_file)
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    scenes = []
    for scene_dir in candidates:
        dem = _find(scene_dir, ("dem", "dsm"), (".tif", ".tiff"))
        if dem is None:
            continue
        entry: dict = {"id": scene_dir.name, "dem": str(dem.resolve())}
        dtm = _find(scene_dir, ("dtm",), (".tif", ".tiff"))
        if dtm:
            entry["dtm"] = str(dtm.resolve())
        channels = {name: _find(scene_dir, (name,), (".tif", ".tiff")) for name in SCENE_CHANNELS}
        channels = {name: str(p.resolve()) for name, p in channels.items() if p is not None}
        if channels:
            entry["channels"] = channels
        labels: dict = {}
        raster = _find(scene_dir, ("labels",), (".tif", ".tiff"))
        if raster:
            labels["raster"] = str(raster.resolve())
        vectors = {task: _find(scene_dir, (task,), (".gpkg", ".geojson", ".shp")) for task in TASKS}
        vectors = {task: str(p.resolve()) for task, p in vectors.items() if p is not None}
        if vectors and not raster:
            labels["vector"] = vectors
        elif vectors:
            names = ", ".join(Path(path).name for path in vectors.values())
            warnings.warn(f"scene '{scene_dir.name}' of folder {folder}: its labels come from {raster.name}; "
                          f"{names} beside it {'is' if len(vectors) == 1 else 'are'} not read (write a "
                          "dataset.yaml naming both to use them)", stacklevel=3)
        if labels:
            entry["labels"] = labels
        scenes.append(entry)
    if not scenes:
        raise DemsegError(f"no scenes in folder {folder}: expected sub-folders holding dem.tif (or dsm.tif)")
    try:
        return DatasetSpec(name=folder.name, scenes=scenes, root=folder.resolve())
    except ValidationError as exc:
        raise DemsegError(f"folder {folder}: {exc.errors()[0]['msg']}") from exc
