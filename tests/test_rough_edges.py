"""Nothing lost, continued: silent wrong results and the remaining rough edges, each one line and exit 2.

Every case goes through the command line where there is one: one line on stderr, exit code 2,
no traceback, and nothing half-written.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from demseg.cli import main
from demseg.data.synth import generate_world
from demseg.errors import DemsegError

TILE = 64
LONG = "x" * 300  # a file or folder name no file system takes (most stop at 255 bytes)
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------------- shared tiny outputs


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("rough") / "world", scenes=4, size_px=192, seed=4,
                          val_fraction=0.25, progress=False)


def train_argv(spec, out, *extra) -> list[str]:
    return ["train", str(spec), "--preset", "scratch", "--mix", "none", "--coarsen", "none", "--auxiliary", "none",
            "--recipe", "relief+slope", "--tile-size-px", str(TILE), "--train-tiles", "2", "--val-tiles", "2",
            "--iters", "2", "--val-every", "2", "--unet-width", "4", "--batch-size", "2", "--views", "2", "--quiet",
            "--out", str(out), *map(str, extra)]


def pretrain_argv(source, out, *extra) -> list[str]:
    return ["pretrain", str(source), "--tile-size-px", str(TILE), "--iters", "2", "--batch-size", "2",
            "--decoder-layers", "1", "--decoder-width", "16", "--pool-size", "4", "--quiet", "--out", str(out),
            *map(str, extra)]


def experiment_argv(spec, out, *extra) -> list[str]:
    return ["experiment", str(spec), "--models", "unet", "--train-tiles", "2", "--seeds", "1", "--iters", "2",
            "--val-every", "2", "--tile-size-px", str(TILE), "--unet-width", "4", "--val-tiles", "2", "--recipe",
            "relief+slope", "--quiet", "--out", str(out), *map(str, extra)]


@pytest.fixture(scope="module")
def outputs(world, tmp_path_factory) -> dict[str, Path]:
    """A finished train run, pre-training checkpoint and experiment, each made by its command."""
    root = tmp_path_factory.mktemp("outputs")
    made = {"run": root / "run", "ckpt": root / "ckpt", "exp": root / "exp"}
    assert main(train_argv(world, made["run"])) == 0
    assert main(pretrain_argv(world, made["ckpt"])) == 0
    assert main(experiment_argv(world, made["exp"])) == 0
    return made


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def written(folder: Path) -> list[str]:
    """What a command left in a folder, apart from demseg's own hidden marker and lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".demseg")) if folder.exists() else []


def one_line_error(capsys, argv, *words: str) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(word.lower() in err.lower() for word in words), err
    return err


def copy_world(world: Path, folder: Path) -> Path:
    shutil.copytree(Path(world).parent, folder)
    return folder / "dataset.yaml"


# ------------------------------------------------------------------------------------- values no DEM can hold


def with_float32_max_block(dem: Path) -> None:
    with rasterio.open(dem) as src:
        values, profile = src.read(1), src.profile
    values[10:40, 10:40] = FLOAT32_MAX  # an undeclared nodata value some tools write
    with rasterio.open(dem, "w", **profile) as dst:
        dst.write(values, 1)


def test_a_dem_holding_float32_max_is_refused_naming_the_file_instead_of_training_on_it(world, tmp_path, capsys):
    spec = copy_world(world, tmp_path / "w")
    with_float32_max_block(tmp_path / "w" / "s001" / "dem.tif")
    err = one_line_error(capsys, train_argv(spec, tmp_path / "run"), "no plausible value", "s001",
                         "nodata")
    assert "3.4028235e+38" in err  # the value to declare, written so that it reads back as itself
    assert written(tmp_path / "run") == []  # no run saved as finished


def test_predict_refuses_a_dem_holding_float32_max_and_writes_nothing(world, outputs, tmp_path, capsys):
    dem = tmp_path / "dem.tif"
    shutil.copy(Path(world).parent / "s000" / "dem.tif", dem)
    with_float32_max_block(dem)
    one_line_error(capsys, ["predict", outputs["run"], dem, "--out", tmp_path / "pred", "--quiet"],
                   "no plausible value")
    assert written(tmp_path / "pred") == []


def test_values_beyond_any_elevation_declared_as_nodata_in_the_spec_are_read_as_nodata(world, tmp_path):
    from demseg.data.scene import load_scenes
    from demseg.data.spec import load_spec

    dem = tmp_path / "dem.tif"
    shutil.copy(Path(world).parent / "s000" / "dem.tif", dem)
    with_float32_max_block(dem)
    (tmp_path / "spec.yaml").write_text(f"scenes:\n  - id: a\n    dem: dem.tif\n    nodata: {np.float32(FLOAT32_MAX)}\n")
    (scene,) = load_scenes(load_spec(tmp_path / "spec.yaml"))
    assert not scene.dem.valid_mask[10:40, 10:40].any() and scene.dem.valid_mask.mean() > 0.5


# ------------------------------------------------------------------------------------- whose folder is it


@pytest.mark.parametrize("command, target", [("train", "exp"), ("pretrain", "run"), ("train", "ckpt")])
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_no_command_replaces_another_commands_output_even_with_overwrite(world, outputs, capsys, command, target,
                                                                         overwrite):
    before = snapshot(outputs[target])
    argv = (train_argv if command == "train" else pretrain_argv)(world, outputs[target])
    one_line_error(capsys, [*argv, *(["--overwrite"] if overwrite else [])], "holds the output of", "never replaces")
    assert snapshot(outputs[target]) == before


@pytest.mark.parametrize("command", ["experiment", "pretrain"])
def test_experiment_or_pretrain_into_their_own_input_world_is_refused_even_with_overwrite(world, tmp_path, capsys,
                                                                                          command):
    spec = copy_world(world, tmp_path / "w")
    before = snapshot(tmp_path / "w")
    argv = (experiment_argv if command == "experiment" else pretrain_argv)(spec, tmp_path / "w", "--overwrite")
    one_line_error(capsys, argv, "holds an input")
    assert snapshot(tmp_path / "w") == before


def test_pretraining_into_an_earlier_pretraining_names_resume_and_overwrite(world, outputs, capsys):
    before = snapshot(outputs["ckpt"])
    one_line_error(capsys, pretrain_argv(world, outputs["ckpt"]), "--resume", "--overwrite")
    assert snapshot(outputs["ckpt"]) == before


def test_the_demo_never_writes_into_a_run_or_a_users_folder(outputs, tmp_path, capsys):
    before = snapshot(outputs["run"])
    one_line_error(capsys, ["demo", "-o", outputs["run"], "--quiet"], "demseg train", "-o")
    assert snapshot(outputs["run"]) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    one_line_error(capsys, ["demo", "-o", tmp_path / "mine", "--quiet"], "did not write")
    assert written(tmp_path / "mine") == ["notes.txt"]


def test_the_demo_resumes_in_its_own_earlier_folder(tmp_path):
    from demseg.train.demo import _demo_folder

    (tmp_path / "demo" / "world").mkdir(parents=True)
    (tmp_path / "demo" / "reference").mkdir()
    assert _demo_folder(tmp_path / "demo") == tmp_path / "demo"  # an earlier demo's folder, even without a marker
    assert (tmp_path / "demo" / ".demseg-output").read_text() == "demo"
    assert _demo_folder(tmp_path / "new") == tmp_path / "new"


# ------------------------------------------------------------------------------------- evaluate


def test_evaluating_one_run_on_two_worlds_of_one_name_keeps_both_results(world, outputs, tmp_path, capsys):
    other = generate_world(tmp_path / "other", scenes=2, size_px=128, seed=9, val_fraction=0.5, progress=False)
    run = outputs["run"]
    shutil.rmtree(run / "evaluations", ignore_errors=True)
    folders = {}
    for spec in (world, other):
        assert main(["evaluate", str(run), str(spec), "--quiet"]) == 0
        folders[spec] = Path(capsys.readouterr().out.strip().split(": ")[-1])
    assert folders[world] != folders[other] and all(f.name.startswith("synthetic-world-") for f in folders.values())
    for spec, folder in folders.items():
        assert json.loads((folder / "metrics.json").read_text())["spec"] == str(spec)
    assert main(["evaluate", str(run), str(world), "--quiet"]) == 0  # the same spec again: its own folder
    assert Path(capsys.readouterr().out.strip().split(": ")[-1]) == folders[world]
    assert len(list((run / "evaluations").iterdir())) == 2


def test_evaluate_of_a_run_folder_it_cannot_write_is_one_line_naming_o(world, outputs, tmp_path, capsys,
                                                                        monkeypatch):
    import os

    run = Path(outputs["run"])
    access = os.access

    def read_only(path, mode, *args, **kwargs):  # as root every folder is writable: pretend this run is not
        if run in (Path(path), *Path(path).parents) and mode & os.W_OK:
            return False
        return access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", read_only)
    before = snapshot(run)
    one_line_error(capsys, ["evaluate", run, world, "--quiet"], "not a writable folder", "-o")
    assert snapshot(run) == before  # nothing made in it
    assert main(["evaluate", str(run), str(world), "-o", str(tmp_path / "ev"), "--quiet"]) == 0
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_a_failed_evaluation_leaves_no_metrics_json(world, outputs, tmp_path, capsys, monkeypatch):
    from demseg.evaluate import score

    out = tmp_path / "ev"
    assert main(["evaluate", str(outputs["run"]), str(world), "-o", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").is_file()

    def disk_full(*args, **kwargs):
        raise DemsegError("no space left on the device writing preview.png")

    monkeypatch.setattr(score, "_preview", disk_full)
    one_line_error(capsys, ["evaluate", outputs["run"], world, "-o", out, "--quiet"], "no space left")
    assert not (out / "metrics.json").exists()


# ------------------------------------------------------------------------------------- weights, probe


@pytest.fixture
def pickled_hf_folder(tmp_path, capsys) -> tuple[Path, Path]:
    """A Hugging Face ViTMAE folder whose pytorch_model.bin would create a file when unpickled."""
    from transformers import ViTMAEModel

    from demseg.models.vit import mae_config

    folder, marker = tmp_path / "hf", tmp_path / "executed"
    ViTMAEModel(mae_config("tiny", num_channels=2)).save_pretrained(folder, safe_serialization=False)
    for path in folder.glob("*.safetensors"):
        path.unlink()

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"embeddings.cls_token": Evil()}, folder / "pytorch_model.bin")
    capsys.readouterr()  # transformers' progress bar
    return folder, marker


@pytest.mark.parametrize("command", ["train", "probe"])
def test_a_hugging_face_folder_with_pickled_code_is_refused_in_one_line(world, tmp_path, capsys, pickled_hf_folder,
                                                                        command):
    folder, marker = pickled_hf_folder
    if command == "train":
        argv = ["train", world, "--paper", "--backbone-weights", folder, "--tile-size-px", TILE, "--train-tiles", "2",
                "--val-tiles", "2", "--iters", "2", "--quiet", "--out", tmp_path / "run"]
    else:
        argv = ["probe", world, "--backbone-weights", folder, "--tile-size-px", TILE]
    one_line_error(capsys, argv, "refusing", "pickled")
    assert not marker.exists() and written(tmp_path / "run") == []


def test_probe_checks_every_weights_name_before_probing_the_first(world, capsys, monkeypatch):
    from demseg.evaluate import probe

    def never(*args, **kwargs):
        raise AssertionError("probed before every weights name was checked")

    monkeypatch.setattr(probe, "_probe_one", never)
    monkeypatch.setattr(probe, "load_split", never)
    one_line_error(capsys, ["probe", world, "--backbone-weights", "dem-tiny,no-such-encoder", "--tile-size-px", TILE],
                   "no-such-encoder")


# ------------------------------------------------------------------------------------- paths and CRSs


@pytest.fixture(scope="module")
def laz(tmp_path_factory) -> Path:
    from test_lidar import scene_points, write_points

    return write_points(tmp_path_factory.mktemp("laz") / "scene.laz", scene_points())


def test_rasterize_into_a_symlink_loop_is_one_line_before_any_work(laz, tmp_path, capsys, monkeypatch):
    from demseg.lidar import pipeline

    def never(*args, **kwargs):
        raise AssertionError("read the point clouds before checking --out")

    monkeypatch.setattr(pipeline, "read_header", never)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    one_line_error(capsys, ["rasterize", laz, "--out", tmp_path / "loop", "--quiet"], "loop")


@pytest.mark.parametrize("case", ["train", "train spec", "predict", "synth", "rasterize", "evaluate", "experiment",
                                  "pretrain", "report", "export", "data check spec"])
def test_a_name_longer_than_the_file_system_takes_is_one_line(world, outputs, laz, tmp_path, capsys, case):
    long = tmp_path / LONG
    dem = Path(world).parent / "s000" / "dem.tif"
    argv = {
        "train": train_argv(world, long),
        "train spec": train_argv(tmp_path / f"{LONG}.yaml", tmp_path / "run"),
        "predict": ["predict", outputs["run"], dem, "--out", long, "--quiet"],
        "synth": ["synth", "-o", long, "--scenes", "1", "--size-px", "64", "--quiet"],
        "rasterize": ["rasterize", laz, "--out", long, "--quiet"],
        "evaluate": ["evaluate", outputs["run"], world, "-o", long, "--quiet"],
        "experiment": experiment_argv(world, long),
        "pretrain": pretrain_argv(world, long),
        "report": ["report", outputs["exp"], "--out", long],
        "export": ["export", outputs["run"], "--out", tmp_path / f"{LONG}.onnx"],
        "data check spec": ["data", "check", long / "spec.yaml"],
    }[case]
    one_line_error(capsys, argv, "255")
    assert written(tmp_path) == []


def test_an_oserror_about_a_path_is_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    from demseg.models import encoders

    def broken():
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "weights"))

    monkeypatch.setattr(encoders, "shipped_model_names", broken)
    one_line_error(capsys, ["models"], "Input/output error", "weights")


@pytest.mark.parametrize("command", ["data check", "predict", "rasterize"])
def test_an_unknown_epsg_code_prints_demsegs_line_and_nothing_of_gdals(world, outputs, laz, tmp_path, capfd,
                                                                       command):
    argv = {"data check": ["data", "check", world],
            "predict": ["predict", outputs["run"], world, "--out", tmp_path / "pred", "--quiet"],
            "rasterize": ["rasterize", laz, "--out", tmp_path / "r", "--quiet"]}[command]
    for _ in range(2):  # GDAL prints only from its second failure in a process
        assert main([*map(str, argv), "--crs", "EPSG:999999"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["demseg: error: " + err[0].split("demseg: error: ")[-1]] * 2, err
    assert all("ERROR 1" not in line and "EPSG:999999" in line for line in err), err


# ------------------------------------------------------------------------------------- specs and labels


def spec_with(tmp_path: Path, world: Path, labels: dict) -> Path:
    scene = Path(world).parent / "s000"
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "t", "scenes": [{"id": "a", "dem": str(scene / "dem.tif"),
                                                         "labels": {"raster": str(scene / "labels.tif"), **labels}}]}))
    return spec


@pytest.mark.parametrize("labels, words", [
    ({"classes": {"buildings": 1, "roads": 1}}, ("code 1", "buildings and roads")),
    ({"classes": {"buildings": 1, "roads": [2, 1]}}, ("code 1", "buildings and roads")),
    ({"classes": {"buildings": 1}, "ignore": 1}, ("ignore code 1", "buildings")),
    ({"classes": {"buildings": -1}}, ("-1", "0..65535")),
    ({"classes": {"buildings": 70000}}, ("70000", "0..65535")),
    ({"ignore": 65536}, ("65536", "0..65535")),
], ids=["duplicate", "duplicate in a list", "ignore is a class", "negative", "over uint16", "ignore over uint16"])
def test_spec_class_codes_are_validated_in_one_line(world, tmp_path, capsys, labels, words):
    one_line_error(capsys, ["data", "check", spec_with(tmp_path, world, labels), "--tile-size-px", TILE], *words)


def test_a_folder_scene_with_a_label_raster_and_vectors_says_the_vectors_are_not_read(world, tmp_path):
    from demseg.data.spec import load_spec

    shutil.copytree(Path(world).parent / "s000", tmp_path / "city" / "a")
    with pytest.warns(UserWarning, match=r"labels come from labels.tif; buildings.gpkg, roads.gpkg .*not read"):
        spec = load_spec(tmp_path / "city")
    assert spec.scenes[0].labels.raster and not spec.scenes[0].labels.vector


def test_a_yaml_scene_with_a_label_raster_and_a_vector_reads_both(world, tmp_path):
    from demseg.data.scene import load_scenes
    from demseg.data.spec import load_spec

    scene = Path(world).parent / "s000"
    with rasterio.open(scene / "labels.tif") as src:
        shape = src.shape
        profile = src.profile
    with rasterio.open(tmp_path / "empty_labels.tif", "w", **profile) as dst:
        dst.write(np.zeros(shape, profile["dtype"]), 1)
    (tmp_path / "spec.yaml").write_text(json.dumps({"scenes": [{"id": "a", "dem": str(scene / "dem.tif"), "labels": {
        "raster": "empty_labels.tif", "classes": {"buildings": 1}, "vector": {"buildings": str(scene /
                                                                                               "buildings.gpkg")}}}]}))
    (loaded,) = load_scenes(load_spec(tmp_path / "spec.yaml"), ["buildings"])
    assert (loaded.targets["buildings"] == 1).sum() > 0  # the vector's buildings, over a raster that has none


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_road_width_is_refused_on_the_command_line_and_in_a_spec(world, tmp_path, capsys, value):
    one_line_error(capsys, ["data", "check", world, f"--road-width-m={value}"], "--road-width-m", "finite")
    scene = Path(world).parent / "s000"
    spec = tmp_path / "spec.yaml"
    yaml_value = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[value]
    spec.write_text(f"scenes:\n  - id: a\n    dem: {scene / 'dem.tif'}\n    labels:\n      vector: {{roads: "
                    f"{scene / 'roads.gpkg'}}}\n      road_width_m: {yaml_value}\n")
    one_line_error(capsys, ["data", "check", spec], "road_width_m", "finite")


# ------------------------------------------------------------------------------------- rasterize


def test_rasterize_refuses_a_point_file_given_twice_also_through_a_link(laz, tmp_path, capsys):
    (tmp_path / "link.laz").symlink_to(laz)
    for second in (laz, tmp_path / "link.laz"):
        one_line_error(capsys, ["rasterize", laz, second, "--out", tmp_path / "r", "--quiet"], "given twice")
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("classes, role", [("buildings=2", "ground_class"), ("roads=9", "water_class")])
def test_rasterize_refuses_a_task_on_the_ground_or_water_class(laz, tmp_path, capsys, classes, role):
    one_line_error(capsys, ["rasterize", laz, "--classes", classes, "--out", tmp_path / "r", "--quiet"], role)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- flags that do not apply


def test_report_refuses_a_reference_model_the_experiments_never_ran(outputs, tmp_path, capsys):
    one_line_error(capsys, ["report", outputs["exp"], "--reference", "resnet", "--out", tmp_path / "rep"],
                   "--reference resnet", "unet")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_finetune_with_a_unet_is_refused(world, tmp_path, capsys, command):
    argv = (train_argv(world, tmp_path / "out", "--model", "unet", "--finetune", "top-1") if command == "train"
            else experiment_argv(world, tmp_path / "out", "--finetune", "top-1"))
    one_line_error(capsys, argv, "--finetune", "unet")
    assert written(tmp_path / "out") == []


def test_predict_refuses_a_dtm_without_one_valid_pixel_instead_of_ignoring_it(world, outputs, tmp_path, capsys):
    dem = Path(world).parent / "s000" / "dem.tif"
    with rasterio.open(dem) as src:
        shape, profile = src.shape, {**src.profile, "nodata": -9999.0}
    with rasterio.open(tmp_path / "dtm.tif", "w", **profile) as dst:
        dst.write(np.full(shape, -9999.0, np.float32), 1)
    one_line_error(capsys, ["predict", outputs["run"], dem, "--dtm", tmp_path / "dtm.tif", "--out", tmp_path / "pred",
                            "--quiet"], "DTM has no valid elevation")
    assert written(tmp_path / "pred") == []


def test_a_refused_evaluation_makes_no_folder(world, outputs, capsys):
    run = Path(outputs["run"])
    before = snapshot(run)
    one_line_error(capsys, ["evaluate", run, world, "--resample", "--quiet"], "--resample")  # its own data
    assert snapshot(run) == before


def test_every_commands_manifest_starts_with_the_same_provenance(outputs, tmp_path):
    from test_quickstart import write_city

    laz = write_city(tmp_path / "city.laz")
    assert main(["rasterize", str(laz), "--pixel-size-m", "1", "--crs", "EPSG:28992", "--out",
                 str(tmp_path / "rast"), "--quiet"]) == 0
    folders = {"train": outputs["run"], "pretrain": outputs["ckpt"], "experiment": outputs["exp"],
               "rasterize": tmp_path / "rast"}
    for command, folder in folders.items():
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        assert manifest["tool"] == f"demseg {command}", folder
        assert {"created_utc", "command", "config", "versions"} <= set(manifest), folder
        assert manifest["versions"]["torch"] and isinstance(manifest["config"], dict), folder


def test_finetune_with_a_unet_is_refused_in_python_too(world, tmp_path):
    from demseg.errors import DemsegError
    from demseg.evaluate.metrics import SegmentationScorer
    from demseg.runs.config import TrainConfig
    from demseg.train.experiment import ExperimentConfig, run_experiment
    from demseg.train.run import train_run

    with pytest.raises(DemsegError, match="--finetune top-1 .*unet has none"):
        train_run(world, TrainConfig(model="unet", finetune="top-1"), tmp_path / "run", SegmentationScorer)
    with pytest.raises(DemsegError, match="--finetune top-1"):
        run_experiment(world, ExperimentConfig(models=["unet"], base=TrainConfig(finetune="top-1")), tmp_path / "ex")
    assert not (tmp_path / "run").exists() and not (tmp_path / "ex").exists()
