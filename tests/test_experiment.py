"""The label-budget protocol: outputs, columns, resuming, and the metrics it reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from test_train import tiny_config

from demseg.data.synth import generate_world
from demseg.evaluate.metrics import ConfusionCounts, SegmentationScorer, mean_ci95, object_matches
from demseg.train.experiment import ExperimentConfig, run_experiment

REQUIRED = "task,model,backbone_weights,train_tiles,seed,iters,best_iter,iou,f1,precision,recall,train_seconds"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), scenes=6, size_px=256, seed=2, progress=False)


def test_experiment_writes_results_summary_curves_previews_and_resumes(world, tmp_path):
    config = ExperimentConfig(tasks=["buildings", "roads"], models=["mae-upernet", "unet"],
                              backbone_weights=["random"], train_tiles=[2, 4], seeds=2,
                              base=tiny_config(iters=4, val_every=2), preview_tiles=2)
    rows = run_experiment(world, config, tmp_path / "exp", progress=False)
    assert len(rows) == 2 * 2 * 2 * 2
    with open(tmp_path / "exp" / "results.csv") as handle:
        header = handle.readline().strip()
        records = list(csv.DictReader([header] + handle.read().splitlines()))
    assert header.startswith(REQUIRED)
    assert all(0.0 <= float(r["iou"]) <= 1.0 for r in records if r["iou"])
    summary = (tmp_path / "exp" / "summary.md").read_text()
    assert "| train tiles |" in summary and "±" in summary
    assert (tmp_path / "exp" / "curves.png").stat().st_size > 1000
    previews = list((tmp_path / "exp" / "runs").glob("*/preview.png"))
    assert len(previews) == 4  # one per model and task, at the largest budget, seed 0
    from PIL import Image

    assert Image.open(previews[0]).size[1] < Image.open(previews[0]).size[0]  # 2 tile rows of 4 panels
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["runs"] == 16 and "sha256" in manifest["data"]
    # nested subsets: the 2 tiles of a seed are inside its 4
    by_key = {(r["task"], r["model"], r["train_tiles"], r["seed"]): set(r["train_tile_ids"]) for r in rows}
    assert by_key[("roads", "unet", 2, 1)] < by_key[("roads", "unet", 4, 1)]
    # resume: an interrupted experiment redoes only what is missing
    done = sorted((tmp_path / "exp" / "runs").glob("*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    done[0].unlink()
    rows_again = run_experiment(world, config, tmp_path / "exp", progress=False)
    assert len(rows_again) == 16 and done[0].exists()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in done[1:])


def test_a_different_experiment_in_the_same_folder_is_refused(world, tmp_path):
    from demseg.errors import DemsegError

    config = ExperimentConfig(tasks=["buildings"], models=["unet"], train_tiles=[2], seeds=1,
                              base=tiny_config(iters=2, val_every=2), preview_tiles=0)
    run_experiment(world, config, tmp_path / "exp", progress=False)
    other = config.model_copy(update={"seeds": 2})
    with pytest.raises(DemsegError, match="different experiment"):
        run_experiment(world, other, tmp_path / "exp", progress=False)


def test_a_folder_left_by_a_failed_experiment_is_reused_by_the_corrected_command(world, tmp_path):
    from demseg.errors import DemsegError

    bad = ExperimentConfig(tasks=["buildings"], models=["unet"], train_tiles=[500], seeds=1,
                           base=tiny_config(iters=2, val_every=2), preview_tiles=0)
    with pytest.raises(DemsegError, match="only"):
        run_experiment(world, bad, tmp_path / "exp", progress=False)
    good = bad.model_copy(update={"train_tiles": [2]})
    assert len(run_experiment(world, good, tmp_path / "exp", progress=False)) == 1


def test_a_users_own_folder_is_never_cleared_without_overwrite(world, tmp_path):
    from demseg.errors import DemsegError

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("mine")
    config = ExperimentConfig(tasks=["buildings"], models=["unet"], train_tiles=[2], seeds=1,
                              base=tiny_config(iters=2, val_every=2), preview_tiles=0)
    with pytest.raises(DemsegError, match="exists"):
        run_experiment(world, config, tmp_path / "exp", progress=False)
    assert (tmp_path / "exp" / "notes.txt").read_text() == "mine"


def test_pixel_metrics_match_hand_counts_and_ignore_unknown_pixels():
    target = np.array([[1, 1, 0, 255], [0, 1, 0, 255]], np.uint8)
    prediction = np.array([[1, 0, 1, 1], [0, 1, 0, 1]], np.uint8)
    counts = ConfusionCounts()
    counts.add(prediction, target)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (2, 1, 1, 2)
    scores = counts.scores()
    assert scores["iou"] == pytest.approx(0.5) and scores["f1"] == pytest.approx(2 / 3)


def test_object_f1_matches_instances_at_iou_half():
    truth = np.zeros((40, 40), bool)
    truth[2:12, 2:12] = True
    truth[20:30, 20:30] = True
    prediction = np.zeros_like(truth)
    prediction[2:12, 3:13] = True  # IoU 0.82 with the first
    prediction[20:24, 20:24] = True  # IoU 0.16 with the second
    assert object_matches(prediction, truth, np.ones_like(truth)) == (1, 2, 2)
    scorer = SegmentationScorer("buildings", pixel_size_m=0.5)
    scorer.add(prediction.astype(np.uint8), truth.astype(np.uint8))
    assert scorer.scores()["object_f1"] == pytest.approx(0.5)


def test_road_completeness_and_correctness_use_a_buffer():
    truth = np.zeros((30, 30), np.uint8)
    truth[10:14, :] = 1
    prediction = np.zeros_like(truth)
    prediction[11:15, :] = 1  # shifted by one pixel: within a 2 m buffer at 0.5 m pixels
    scorer = SegmentationScorer("roads", pixel_size_m=0.5, road_buffer_m=2.0)
    scorer.add(prediction, truth)
    scores = scorer.scores()
    assert scores["completeness"] == 1.0 and scores["correctness"] == 1.0 and scores["iou"] < 1.0


def test_confidence_interval_is_student_t():
    mean, half = mean_ci95([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)
    assert np.isnan(mean_ci95([0.4])[1])


def test_score_on_other_datasets_adds_a_row_per_dataset_and_a_pooled_row(world, tmp_path):
    import yaml

    other = generate_world(tmp_path / "other", scenes=2, size_px=160, pixel_size_m=1.0, seed=9, progress=False)
    renamed = tmp_path / "renamed.yaml"
    spec = yaml.safe_load(other.read_text())
    renamed.write_text(yaml.safe_dump({**spec, "name": "other-city-b"}).replace(": s0", f": {other.parent}/s0")
                       .replace(f"id: {other.parent}/s0", "id: s0"))
    config = ExperimentConfig(tasks=["buildings"], models=["unet", "mae-detail"], backbone_weights=["random"],
                              train_tiles=[2], seeds=1, base=tiny_config(iters=2, val_every=2), preview_tiles=0,
                              score_on=[str(other), str(renamed)])
    rows = run_experiment(world, config, tmp_path / "exp", progress=False)
    assert {r["scored_on"] for r in rows} == {"validation", spec["name"], "other-city-b", "pooled"}
    elsewhere = [r for r in rows if r["scored_on"] not in ("validation", "pooled")]
    # the 1 m world is resampled to the 0.5 m training grid: 160 px scenes become 320 px, windows overlap
    assert all(r["scored_pixels"] > 2 * (320 * 320) * 0.5 for r in elsewhere)
    pooled = [r for r in rows if r["scored_on"] == "pooled"]
    assert all(p["tp"] == sum(r["tp"] for r in elsewhere if r["label"] == p["label"]) for p in pooled)
    assert all(p["raised_fp"] == sum(r["raised_fp"] for r in elsewhere if r["label"] == p["label"]) for p in pooled)
    assert all(r["raised_negatives"] > 0 and 0 <= r["raised_fp_rate"] <= 1 for r in elsewhere)
    summary = (tmp_path / "exp" / "summary.md").read_text()
    assert "## Scored on pooled" in summary and "minus unet" in summary and "Raised false-positive rate" in summary
    header = (tmp_path / "exp" / "results.csv").read_text().splitlines()[0]
    assert "scored_on" in header


def test_detail_model_logits_are_full_resolution_and_only_trainable_parts_get_gradients():
    import torch

    from demseg.models import ModelConfig, build

    model = build(ModelConfig(model="mae-detail", backbone_weights="random", tile_size_px=64, head_width=8,
                              neck_width=8, detail_width=4, backbone_dtype="fp32")).train()
    x = torch.randn(2, 2, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 2, 64, 64)
    logits[:, 1, 10, 10].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.detail.stride1[0][0].weight.grad.abs().sum() > 0
    # a change of one input pixel moves the logits at full resolution (the detail path sees pixels)
    with torch.no_grad():
        model.eval()
        changed = x.clone()
        changed[:, :, 40, 40] += 5.0
        delta = (model(changed) - model(x)).abs()[0, 1]
    assert delta[40, 40] > delta[40, 52] > 0


def test_score_on_a_spec_without_labels_for_the_task_is_one_line_and_nothing_written(world, tmp_path, capsys):
    from demseg.cli import main

    other = generate_world(tmp_path / "other", scenes=1, size_px=160, seed=9, progress=False).parent
    buildings_only = tmp_path / "buildings_only.yaml"
    buildings_only.write_text(f"name: b\nscenes:\n  - id: a\n    dem: {other}/s000/dem.tif\n"
                              f"    labels: {{raster: {other}/s000/labels.tif, classes: {{buildings: 1}}, "
                              "ignore: 255}\n")
    code = main(["experiment", str(world), "--task", "roads", "--models", "unet", "--train-tiles", "2",
                 "--seeds", "1", "--iters", "2", "--val-every", "2", "--unet-width", "4", "--quiet",
                 "--score-on", str(buildings_only), "--out", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has labels for roads" in err[0]
    assert not (tmp_path / "exp" / "runs").exists() or not any((tmp_path / "exp" / "runs").iterdir())


def test_score_on_a_spec_that_shares_files_with_the_training_spec_is_refused(world, tmp_path, capsys):
    from demseg.cli import main

    code = main(["experiment", str(world), "--models", "unet", "--train-tiles", "2", "--seeds", "1", "--iters", "2",
                 "--val-every", "2", "--unet-width", "4", "--quiet", "--score-on", str(world),
                 "--out", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "shares files" in err[0]


@pytest.mark.parametrize("factors", ["1", "0,2", "-2"])
def test_resolution_augmentation_factors_below_two_are_refused(world, tmp_path, capsys, factors):
    from demseg.cli import main

    code = main(["train", "--paper", str(world), "--model", "unet", "--train-tiles", "2", "--iters", "2", "--coarsen", factors,
                 "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "coarsen" in err[0] and not (tmp_path / "run").exists()


def test_experiment_with_resolution_augmentation_trains_on_the_coarser_copies(world, tmp_path):
    config = ExperimentConfig(tasks=["buildings"], models=["unet"], train_tiles=[2], seeds=1,
                              base=tiny_config(iters=2, val_every=2, coarsen=[2]), preview_tiles=0)
    rows = run_experiment(world, config, tmp_path / "exp", progress=False)
    assert rows[0]["label"] == "unet+coarsen-2" and rows[0]["coarsen"] == "2"
    assert len(rows[0]["train_tile_ids"]) == 2  # the budget counts labelled tiles, not their copies


def test_experiment_runs_mix_in_the_same_second_dataset_tiles(world, tmp_path):
    other = generate_world(tmp_path / "synthetic", scenes=2, size_px=256, seed=12, progress=False)
    config = ExperimentConfig(tasks=["buildings"], models=["unet", "mae-detail"], backbone_weights=["random"],
                              train_tiles=[2], seeds=2, preview_tiles=0,
                              base=tiny_config(iters=2, val_every=2, mix=str(other), mix_tiles=3, coarsen=[2]))
    rows = run_experiment(world, config, tmp_path / "exp", progress=False)
    assert {r["label"] for r in rows} == {"unet+coarsen-2+mix-synthetic", "mae-detail@random+coarsen-2+mix-synthetic"}
    assert all(r["mix"] == str(other) for r in rows)


def test_raised_false_positives_count_non_target_pixels_above_ground_marked_as_target():
    from demseg.data.arrays import TileArrays
    from demseg.data.scene import Scene
    from demseg.evaluate.scenes import SceneWindows, score_windows
    from demseg.io.raster import DemRaster, GridSpec

    size = 32
    elevation = np.zeros((size, size), np.float32)  # 0 m ground is real ground
    elevation[4:12, 4:12] = 10.0  # a building (labelled)
    elevation[20:28, 20:28] = 8.0  # a tree: raised, not labelled
    target = np.zeros((size, size), np.uint8)
    target[4:12, 4:12] = 1
    valid = np.ones((size, size), bool)
    grid = GridSpec("EPSG:32631", Affine(1.0, 0, 500000.0, 0, -1.0, 5700000.0), size, size)
    dem = DemRaster(elevation, valid, grid, None, "m", None)
    scene = Scene("s", dem, np.zeros((size, size), np.float32), {"buildings": target})
    windows = SceneWindows("w", {"s": scene}, [("s", 0, 0)],
                           TileArrays(["s"], np.zeros((1, 1, size, size), np.float32), target[None]), size)
    marks_everything_raised = (elevation > 2.5).astype(np.float32)
    scores = score_windows([marks_everything_raised], windows, "buildings", 1.0)
    assert scores["raised_negatives"] == 64 and scores["raised_fp"] == 64 and scores["raised_fp_rate"] == 1.0
    only_building = target.astype(np.float32)
    assert score_windows([only_building], windows, "buildings", 1.0)["raised_fp_rate"] == 0.0


def test_the_grid_runs_on_an_external_dask_cluster_resumes_there_and_matches_a_local_run(world, tmp_path,
                                                                                         external_cluster):
    import torch

    config = ExperimentConfig(tasks=["buildings"], models=["unet", "mae-upernet"], backbone_weights=["random"],
                              train_tiles=[2], seeds=2, base=tiny_config(iters=4, val_every=2), preview_tiles=0)
    remote = run_experiment(world, config, tmp_path / "remote", progress=False, scheduler=external_cluster)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the cluster's one-thread workers, so the sums run in the same order
    try:
        local = run_experiment(world, config, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    key = lambda r: (r["model"], r["seed"])  # noqa: E731
    assert sorted(map(key, remote)) == sorted(map(key, local)) and len(remote) == 4
    for a, b in zip(sorted(remote, key=key), sorted(local, key=key), strict=True):
        assert a["train_tile_ids"] == b["train_tile_ids"]
        assert a["iou"] == pytest.approx(b["iou"], abs=1e-6)
    done = sorted((tmp_path / "remote" / "runs").glob("*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    done[0].unlink()
    assert len(run_experiment(world, config, tmp_path / "remote", progress=False, scheduler=external_cluster)) == 4
    assert done[0].exists() and all(p.stat().st_mtime_ns == stamps[p] for p in done[1:])


def test_an_unreachable_scheduler_is_one_line_and_nothing_is_trained(world, tmp_path, capsys):
    from demseg.cli import main

    code = main(["experiment", str(world), "--models", "unet", "--train-tiles", "2", "--seeds", "1", "--iters", "2",
                 "--tile-size-px", "64", "--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout-s", "2",
                 "--out", str(tmp_path / "exp"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Dask scheduler tcp://127.0.0.1:1" in err
    assert not list((tmp_path / "exp").glob("runs/*/metrics.json"))


def test_report_labels_apart_the_same_model_run_with_different_settings(tmp_path):
    from demseg.errors import DemsegError
    from demseg.evaluate.report import combine_experiments, label_apart

    def folder(name: str, settings: bool = True, **base) -> Path:
        path = tmp_path / name
        (path / "runs" / "r").mkdir(parents=True)
        if settings:
            (path / "experiment.json").write_text(json.dumps({"base": {"iters": 300, "unet_width": 16, **base}}))
        return path

    short, long, again = folder("a", iters=100), folder("b"), folder("c", seed=4, train_tiles=50)
    wide, unknown = folder("d", unet_width=8, head_width=32), folder("e", settings=False)
    rows = {f: [{"label": "unet+crop-128", "model": "unet"}, {"label": "unet", "model": "unet"}] for f in (short, long)}
    rows[again] = [{"label": "unet", "model": "unet"}]
    rows[wide] = [{"label": "mae-upernet", "model": "mae-upernet"}]
    rows[unknown] = [{"label": "mae-upernet", "model": "mae-upernet"}]
    rows[long].append({"label": "mae-upernet", "model": "mae-upernet"})
    label_apart(list(rows.items()))
    assert [r["label"] for r in rows[short]] == ["unet+crop-128 [iters=100]", "unet [iters=100]"]
    assert [r["label"] for r in rows[long]] == ["unet+crop-128 [iters=300]", "unet [iters=300]", "mae-upernet [head_width=64]"]
    assert rows[again][0]["label"] == "unet [iters=300]"  # seed and budget are the grid's: the same cell as b
    assert rows[wide][0]["label"] == "mae-upernet [head_width=32]"  # its UNet width does not touch it
    assert rows[unknown][0]["label"] == "mae-upernet"  # no experiment.json: nothing to compare

    for path, iters in ((short, 100), (long, 300)):
        record = {"label": "unet", "model": "unet", "backbone_weights": "-", "task": "buildings", "train_tiles": 10,
                  "seed": 0, "iters": iters, "iou": 0.5}
        (path / "runs" / "r" / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(DemsegError, match=r"--reference unet .*unet \[iters=100\]; unet \[iters=300\]"):
        combine_experiments([short, long], tmp_path / "out", reference="unet")
    assert not (tmp_path / "out").exists()


def test_scoring_blends_windows_exactly_as_whole_scene_prediction_does(tmp_path):
    import rasterio

    from demseg.data.synth import generate_world
    from demseg.evaluate.scenes import blend_scene, scene_windows
    from demseg.io.raster import read_dem
    from demseg.models.inference import predict_images
    from demseg.models.registry import build
    from demseg.predict.sliding import as_input, predict_rasters
    from demseg.runs.config import TrainConfig

    spec = generate_world(tmp_path / "w", scenes=1, size_px=150, seed=3, progress=False)  # 150: windows overlap
    config = TrainConfig(model="unet", recipe="relief+slope", unet_width=4, tile_size_px=64, pixel_size_m=0.5)
    model = build(config).eval()
    windows = scene_windows(spec, "buildings", config)
    probabilities = predict_images(model, windows.arrays.inputs, amp=False, probabilities=True)
    blended = blend_scene(windows, probabilities, "s000")
    scene = tmp_path / "w" / "s000"
    grid = read_dem(scene / "dem.tif").grid
    predict_rasters(model, config, as_input(scene / "dem.tif", scene / "dtm.tif"), grid, tmp_path / "mask.tif",
                    tmp_path / "prob.tif")
    with rasterio.open(tmp_path / "prob.tif") as src:
        percent = src.read(1)
    known = percent != 255  # predict writes nodata where the DEM has none; scoring ignores those pixels
    assert known.sum() > 0.9 * known.size and np.isfinite(blended[known]).all()
    assert np.abs(np.rint(blended[known] * 100) - percent[known]).max() <= 1  # the same blend, up to rounding
