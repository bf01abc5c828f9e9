"""Nothing a user owns is ever lost: no command writes over its inputs, another command's output or the user's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from demseg.cli import main
from demseg.data.synth import generate_world

TILE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("safe") / "world", scenes=4, size_px=192, seed=4, val_fraction=0.25,
                          progress=False)


def train_argv(spec, out) -> list[str]:
    return ["train", str(spec), "--preset", "scratch", "--mix", "none", "--coarsen", "none", "--auxiliary", "none",
            "--recipe", "relief+slope", "--tile-size-px", str(TILE), "--train-tiles", "2", "--val-tiles", "2",
            "--iters", "2", "--val-every", "2", "--unet-width", "4", "--batch-size", "2", "--views", "2", "--quiet",
            "--out", str(out)]


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(train_argv(world, out)) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(word in err for word in words), err
    return err


def test_training_into_the_folder_of_its_own_dataset_is_refused_even_with_overwrite(world, tmp_path, capsys):
    copy = tmp_path / "wcopy"
    shutil.copytree(Path(world).parent, copy)
    before = snapshot(copy)
    assert main([*train_argv(copy / "dataset.yaml", copy), "--overwrite"]) == 2
    one_line_error(capsys, "holds an input")
    assert snapshot(copy) == before


def test_training_into_its_own_starting_run_is_refused_even_with_overwrite(world, run, capsys):
    before = snapshot(run)
    assert main([*train_argv(world, run), "--init", str(run), "--overwrite"]) == 2
    one_line_error(capsys, "is an input")
    assert snapshot(run) == before


def test_an_empty_output_path_or_the_current_folder_is_refused(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("mine")
    for out in ("", ".", str(tmp_path), str(tmp_path.parent)):
        assert main([*train_argv(world, out), "--overwrite"]) == 2
        one_line_error(capsys)
    assert (tmp_path / "mine.txt").read_text() == "mine"


def test_an_experiment_never_replaces_a_finished_training_run(world, run, capsys):
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        argv = ["experiment", str(world), "--models", "unet", "--train-tiles", "2", "--seeds", "1", "--iters", "2",
                "--val-every", "2", "--tile-size-px", str(TILE), "--unet-width", "4", "--val-tiles", "2",
                "--recipe", "relief+slope", "--quiet", "--out", str(run), *extra]
        assert main(argv) == 2
        one_line_error(capsys, "demseg train")
    assert snapshot(run) == before


def test_a_users_own_folder_is_never_cleared_even_with_overwrite(world, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main([*train_argv(world, tmp_path / "mine"), "--overwrite"]) == 2
    one_line_error(capsys, "did not write")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_export_never_writes_over_a_runs_files_a_users_file_or_a_link(run, tmp_path, capsys):
    pytest.importorskip("onnx")
    before = snapshot(run)
    assert main(["export", str(run), "--onnx", "--out", str(run / "model.safetensors")]) == 2
    one_line_error(capsys, "a file of the run itself")
    (tmp_path / "dem.tif").write_bytes(b"a user's DEM")
    assert main(["export", str(run), "--onnx", "--out", str(tmp_path / "dem.tif")]) == 2
    one_line_error(capsys, "exists", "--overwrite")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "dem.tif")
    assert main(["export", str(run), "--onnx", "--out", str(tmp_path / "link.onnx"), "--overwrite"]) == 2
    one_line_error(capsys, "is a link")
    assert (tmp_path / "dem.tif").read_bytes() == b"a user's DEM" and snapshot(run) == before


@pytest.fixture(scope="module")
def experiments(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    for name, seeds in (("ex0", "1"), ("ex1", "2")):
        assert main(["experiment", str(world), "--models", "unet", "--train-tiles", "2", "--seeds", seeds, "--iters",
                     "2", "--val-every", "2", "--tile-size-px", str(TILE), "--unet-width", "4", "--val-tiles", "2",
                     "--recipe", "relief+slope", "--quiet", "--out", str(root / name)]) == 0
    return root


def test_a_report_never_replaces_an_experiment_and_counts_a_folder_named_twice_once(experiments, tmp_path, capsys):
    before = snapshot(experiments / "ex1")
    assert main(["report", str(experiments / "ex0"), "--out", str(experiments / "ex1")]) == 2
    one_line_error(capsys, "experiment folder")
    assert snapshot(experiments / "ex1") == before
    assert main(["report", str(experiments / "ex0"), str(experiments / "ex0"), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    rows = (tmp_path / "r" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 1  # header and the one run, not twice
    assert main(["report", str(experiments / "ex0"), "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "--overwrite")
    assert main(["report", str(experiments / "ex0"), "--out", str(tmp_path / "r"), "--overwrite"]) == 0


@pytest.mark.parametrize("scene_id", ["../../evil", "/tmp/evil", "..", ".hidden", "a/b"])
def test_a_scene_id_that_would_leave_the_output_folder_is_refused_where_the_spec_is_read(world, tmp_path, capsys,
                                                                                       scene_id):
    dem = Path(world).parent / "s000" / "dem.tif"
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "x", "scenes": [{"id": scene_id, "dem": str(dem)}]}))
    assert main(["predict", "synth-detail-buildings", str(spec), "--out", str(tmp_path / "pred"), "--quiet"]) == 2
    one_line_error(capsys, "scene id")
    assert not list(tmp_path.parent.glob("evil*")) and not Path("/tmp/evil_mask.tif").exists()


def test_a_spec_name_that_would_leave_the_evaluation_folder_is_refused(world, run, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(Path(world).read_text().replace("name: synthetic-world", "name: '..'")
                    .replace(": s0", f": {Path(world).parent}/s0").replace(f"id: {Path(world).parent}/s0", "id: s0"))
    before = snapshot(run)
    assert main(["evaluate", str(run), str(spec), "--quiet"]) == 2
    one_line_error(capsys, "spec name")
    assert snapshot(run) == before


@pytest.mark.parametrize("flag", ["--lr", "--val-tiles", "--pixel-size-m"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_number_on_the_command_line_is_one_line(world, tmp_path, capsys, flag, value):
    assert main([*train_argv(world, tmp_path / "r"), flag, value]) == 2
    one_line_error(capsys, flag)
    assert not (tmp_path / "r").exists()


def test_a_finetuned_run_without_its_backbone_file_is_refused_instead_of_using_the_shipped_encoder(world, tmp_path,
                                                                                                  capsys):
    argv = ["train", str(world), "--paper", "--backbone-weights", "dem-tiny", "--finetune", "top-1",
            "--tile-size-px", str(TILE), "--train-tiles", "2", "--val-tiles", "2", "--iters", "2", "--val-every", "2",
            "--head-width", "8", "--neck-width", "8", "--batch-size", "2", "--views", "2", "--quiet",
            "--out", str(tmp_path / "ft")]
    assert main(argv) == 0
    (tmp_path / "ft" / "backbone.safetensors").unlink()
    dem = Path(world).parent / "s000" / "dem.tif"
    assert main(["predict", str(tmp_path / "ft"), str(dem), "--out", str(tmp_path / "pred"), "--quiet"]) == 2
    one_line_error(capsys, "backbone.safetensors is missing")
    assert main(["evaluate", str(tmp_path / "ft"), str(world), "--quiet"]) == 2
    one_line_error(capsys, "backbone.safetensors is missing")


def test_an_older_demseg_folder_is_never_cleared_by_another_command(world, tmp_path, capsys):
    old = tmp_path / "old_experiment"
    (old / "runs" / "a").mkdir(parents=True)
    (old / "runs" / "a" / "metrics.json").write_text("{}")
    (old / ".demseg-output").write_text("")  # an older demseg wrote an empty marker
    before = snapshot(old)
    for extra in ([], ["--overwrite"]):
        assert main([*train_argv(world, old), *extra]) == 2
        one_line_error(capsys, "demseg experiment")
    assert snapshot(old) == before


def test_an_interrupted_checkpointed_run_is_kept_until_resumed_or_overwritten(world, tmp_path, capsys):
    run = tmp_path / "long"
    run.mkdir()
    (run / ".demseg-output").write_text("train")
    (run / "checkpoint.pt").write_bytes(b"a checkpoint")
    assert main(train_argv(world, run)) == 2
    one_line_error(capsys, "--resume", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == b"a checkpoint"


def test_evaluate_out_may_not_be_the_run_or_another_commands_folder(world, run, tmp_path, capsys):
    before = snapshot(run)
    for out in (run, run / "sub"):
        assert main(["evaluate", str(run), str(world), "-o", str(out), "--quiet"]) == 2
        one_line_error(capsys, "input")
    assert snapshot(run) == before
    assert main(["evaluate", str(run), str(world), "-o", str(tmp_path / "ev"), "--quiet"]) == 0
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_synth_overwrite_never_deletes_what_a_user_put_inside_a_world(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path / "w"), "--scenes", "1", "--size-px", "64", "--quiet"]) == 0
    (tmp_path / "w" / "run1").mkdir()
    (tmp_path / "w" / "run1" / "config.json").write_text("{}")
    assert main(["synth", "-o", str(tmp_path / "w"), "--scenes", "1", "--size-px", "64", "--quiet",
                 "--overwrite"]) == 2
    one_line_error(capsys, "not a synthetic world")
    assert (tmp_path / "w" / "run1" / "config.json").is_file()


def test_a_folder_spec_named_dot_takes_the_folders_real_name(world, monkeypatch):
    from demseg.data.spec import load_spec

    monkeypatch.chdir(Path(world).parent / "s000")
    spec = load_spec(Path("."))
    assert spec.name == "s000" and spec.scenes[0].id == "s000"
