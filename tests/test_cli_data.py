"""`demseg data check` and the bad inputs of the data layer: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import shapely
from conftest import ORIGIN, write_raster

from demseg.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert pattern.lower() in lines[0].lower(), lines[0]


def _spec(folder, body):
    path = folder / "spec.yaml"
    path.write_text("name: t\nscenes:\n" + body)
    return path


GOOD_SCENE = "  - id: a\n    dem: dem.tif\n    dtm: dtm.tif\n    labels: {raster: labels.tif, classes: {buildings: 1}}\n"


def test_data_check_prints_a_table_for_a_good_spec(scene_dir, capsys):
    code, out, _ = run_cli(capsys, "data", "check", _spec(scene_dir, GOOD_SCENE), "--tile-size-px", 32)
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:3] == ["scene", "size", "px"]
    assert row.split()[:4] == ["a", "96x96", "1", "EPSG:32631"]


def test_folder_convention_works_as_a_spec(scene_dir, capsys):
    code, out, _ = run_cli(capsys, "data", "check", scene_dir, "--tile-size-px", 32)
    assert code == 0 and "96x96" in out


@pytest.mark.parametrize("case, pattern", [
    ("missing_file", "missing dem file"),
    ("not_a_raster", "not a readable raster"),
    ("corrupt", "corrupt"),
    ("multiband", "--band"),
    ("no_crs", "--crs"),
    ("label_grid", "different grid"),
    ("label_crs", "crs"),
    ("vector_far", "do not overlap"),
    ("all_nodata", "all nodata"),
    ("unknown_class", "unknown class name"),
    ("bad_yaml", "not valid yaml"),
    ("missing_spec", "not found"),
])
def test_bad_inputs_give_one_line_and_exit_2(scene_dir, capsys, case, pattern):
    dem = "dem.tif"
    labels = "labels: {raster: labels.tif, classes: {buildings: 1}}"
    if case == "missing_file":
        dem = "nowhere.tif"
    elif case == "not_a_raster":
        (scene_dir / "text.tif").write_text("not a raster")
        dem = "text.tif"
    elif case == "corrupt":
        data = write_raster(scene_dir / "big.tif", np.random.default_rng(0).random((300, 300)).astype("float32"))
        data.write_bytes(data.read_bytes()[:20000])
        dem = "big.tif"
    elif case == "multiband":
        write_raster(scene_dir / "two.tif", np.ones((2, 96, 96), np.float32))
        dem = "two.tif"
    elif case == "no_crs":
        write_raster(scene_dir / "nocrs.tif", np.ones((96, 96), np.float32), crs=None)
        dem = "nocrs.tif"
    elif case == "label_grid":
        write_raster(scene_dir / "lab2.tif", np.zeros((90, 96), np.uint8), nodata=255)
        labels = "labels: {raster: lab2.tif}"
    elif case == "label_crs":
        write_raster(scene_dir / "lab3.tif", np.zeros((96, 96), np.uint8), nodata=255, crs="EPSG:32632")
        labels = "labels: {raster: lab3.tif}"
    elif case == "vector_far":
        far = shapely.box(ORIGIN[0] + 1e4, ORIGIN[1] + 1e4, ORIGIN[0] + 1e4 + 20, ORIGIN[1] + 1e4 + 20)
        (scene_dir / "far.geojson").write_text(
            '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32631"}}, '
            '"features": [{"type": "Feature", "properties": {}, "geometry": ' + shapely.to_geojson(far) + "}]}")
        labels = "labels: {vector: {buildings: far.geojson}}"
    elif case == "all_nodata":
        write_raster(scene_dir / "empty.tif", np.full((96, 96), -9999.0, np.float32))
        dem = "empty.tif"
    elif case == "unknown_class":
        labels = "labels: {raster: labels.tif, classes: {houses: 1}}"
    spec = _spec(scene_dir, f"  - id: a\n    dem: {dem}\n    {labels}\n")
    if case == "bad_yaml":
        spec.write_text("scenes: [unclosed\n")
    if case == "missing_spec":
        spec = scene_dir / "absent.yaml"
    before = sorted(p.name for p in scene_dir.iterdir())
    code, _, err = run_cli(capsys, "data", "check", spec, "--tile-size-px", 32)
    assert_one_line_error(code, err, pattern)
    assert sorted(p.name for p in scene_dir.iterdir()) == before  # nothing written


@pytest.mark.parametrize("flags, pattern", [
    (["--tile-size-px", "-32"], "positive"),
    (["--tile-size-px", "abc"], "not an integer"),
    (["--tile-size-px", "4096"], "larger than every scene"),
    (["--tile-size-px", "40"], "multiple of 16"),
    (["--min-valid-fraction", "1.5"], "between 0 and 1"),
    (["--no-such-flag"], "unrecognized"),
])
def test_bad_flag_values_give_one_line_and_exit_2(scene_dir, capsys, flags, pattern):
    code, _, err = run_cli(capsys, "data", "check", _spec(scene_dir, GOOD_SCENE), *flags)
    assert_one_line_error(code, err, pattern)


def test_synth_refuses_bad_sizes(tmp_path, capsys):
    code, _, err = run_cli(capsys, "synth", tmp_path / "w", "--size-px", "-5")
    assert_one_line_error(code, err, "positive")
    assert not (tmp_path / "w").exists()


def test_console_script_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "demseg.cli", "data", "check", str(tmp_path / "x.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not found" in result.stderr


def test_every_command_has_help(capsys):
    from demseg.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage" in capsys.readouterr().out
