"""demseg rasterize's LiDAR channels: returns, fml (first minus last), vegshare and intensity.

The hand-built cloud (1 m cells, 8 x 8 m, ground at 0 m): single-return ground (intensity 40)
everywhere but a sloped single-return roof (class 6, intensity 100), one tree cell of two
3-return pulses, one mixed cell (a 2-return pulse beside two single ground returns), one cell
holding only water, and a 3 x 3 gap without points.
"""

from __future__ import annotations

import json
from pathlib import Path

import laspy
import numpy as np
import pyproj
import pytest
import rasterio
from conftest import UTM31

from demseg.cli import main, parse_configs
from demseg.data.spec import SCENE_CHANNELS, load_spec
from demseg.lidar import RasterizeConfig, rasterize

X0, Y0 = 1000.0, 2000.0
SIZE = 8
ROOF = (4, 7, 4, 7)  # x from, x to, y from, y to: in cells east / north of the corner
GAP = (0, 3, 3, 6)
TREE, MIXED, WATER = (1, 1), (3, 1), (6, 1)
QUARTERS = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
# x, y (in the cell), z, class, return number, number of returns, intensity
TREE_POINTS = [(0.25, 0.25, 9.0, 5, 1, 3, 20), (0.25, 0.25, 5.0, 5, 2, 3, 8), (0.25, 0.25, 0.0, 2, 3, 3, 5),
               (0.75, 0.75, 9.4, 5, 1, 3, 30), (0.75, 0.75, 4.0, 5, 2, 3, 9), (0.75, 0.75, 0.2, 2, 3, 3, 6)]
MIXED_POINTS = [(0.25, 0.25, 3.0, 5, 1, 2, 10), (0.25, 0.25, 0.0, 2, 2, 2, 4),
                (0.75, 0.25, 0.0, 2, 1, 1, 40), (0.25, 0.75, 0.0, 2, 1, 1, 40)]
NODATA = -9999.0


def _inside(i: int, j: int, box: tuple[int, int, int, int]) -> bool:
    return box[0] <= i < box[1] and box[2] <= j < box[3]


def _cell_points(i: int, j: int) -> list[tuple]:
    if _inside(i, j, GAP):
        return []
    if (i, j) == TREE:
        return TREE_POINTS
    if (i, j) == MIXED:
        return MIXED_POINTS
    if (i, j) == WATER:
        return [(qx, qy, -0.5, 9, 1, 1, 3) for qx, qy in QUARTERS]
    if _inside(i, j, ROOF):  # sloped 1 m per metre: 0.5 m of height inside a cell, all single returns
        return [(qx, qy, 12.0 + qx, 6, 1, 1, 100) for qx, qy in QUARTERS]
    return [(qx, qy, 0.0, 2, 1, 1, 40) for qx, qy in QUARTERS]


def cloud() -> dict[str, np.ndarray]:
    """The hand-built cloud's point fields as arrays."""
    rows = [(X0 + i + qx, Y0 + j + qy, *rest) for i in range(SIZE) for j in range(SIZE)
            for qx, qy, *rest in _cell_points(i, j)]
    columns = list(zip(*rows, strict=True))
    names = ("x", "y", "z", "classification", "return_number", "number_of_returns", "intensity")
    dtypes = (float, float, float, np.uint8, np.uint8, np.uint8, np.uint16)
    return {name: np.array(column, dtype) for name, column, dtype in zip(names, columns, dtypes, strict=True)}


def write_cloud(path: Path, points: dict[str, np.ndarray]) -> Path:
    """Write the points as LAS 1.4 (format 6) or LAZ by the suffix, in UTM 31N."""
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales, header.offsets = np.array([0.001] * 3), np.array([X0, Y0, 0.0])
    header.add_crs(pyproj.CRS.from_user_input(UTM31))
    las = laspy.LasData(header)
    for name, values in points.items():
        setattr(las, name, values)
    las.write(path)
    return path


def without(what: str) -> dict[str, np.ndarray]:
    """The cloud lacking one thing a channel needs."""
    points = cloud()
    if what == "return numbers":
        points["return_number"][:] = 0
        points["number_of_returns"][:] = 0
    elif what == "multiple returns":
        points["return_number"][:] = 1
        points["number_of_returns"][:] = 1
    elif what == "intensity":
        points["intensity"][:] = 0
    elif what == "vegetation class":  # as AHN3: vegetation left unclassified
        points["classification"][points["classification"] == 5] = 1
    return points


def cell(i: int, j: int) -> tuple[int, int]:
    """(row, col) of cell (i east, j north) on the 1 m output grid."""
    return SIZE - 1 - j, i


def read(out: Path, name: str) -> np.ndarray:
    with rasterio.open(out / f"{name}.tif") as src:
        return src.read(1)


def run_cli(tmp_path: Path, capsys, points: dict[str, np.ndarray], *flags: str) -> tuple[int, list[str], Path]:
    """Run ``demseg rasterize`` on the points; returns the exit code, the stderr lines and the output folder."""
    laz = write_cloud(tmp_path / "a.laz", points)
    out = tmp_path / "out"
    code = main(["rasterize", str(laz), "--pixel-size-m", "1", "--classes", "buildings=6", "--out", str(out),
                 "--quiet", *flags])
    return code, capsys.readouterr().err.strip().splitlines(), out


def no_output_left(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, dict]:
    """The cloud rasterised at 1 m with the default channels and no gap filling."""
    folder = tmp_path_factory.mktemp("channels")
    laz = write_cloud(folder / "cloud.laz", cloud())
    config = RasterizeConfig(pixel_size_m=1.0, fill_radius_m=0.0, classes={"buildings": 6})
    return folder / "out", rasterize([laz], config, folder / "out", progress=False)


def test_every_channel_is_written_as_float32_with_nodata_on_the_dsm_grid(made):
    out, manifest = made
    with rasterio.open(out / "dsm.tif") as dsm:
        grid = (dsm.crs, dsm.transform, dsm.shape)
    for name in SCENE_CHANNELS:
        with rasterio.open(out / f"{name}.tif") as src:
            assert (src.crs, src.transform, src.shape) == grid and grid[2] == (SIZE, SIZE), name
            assert (src.dtypes[0], src.nodata) == ("float32", NODATA), name
    assert list(manifest["channels"]["written"]) == list(SCENE_CHANNELS) and not manifest["channels"]["skipped"]


def test_a_sloped_roof_of_single_returns_has_one_return_no_first_minus_last_and_no_vegetation(made):
    out, _ = made
    roof = cell(5, 5)
    assert read(out, "dsm")[roof] == pytest.approx(12.75, abs=1e-3)  # the slope is in the DSM, not in fml
    assert read(out, "returns")[roof] == 1.0 and read(out, "fml")[roof] == pytest.approx(0.0, abs=1e-6)
    assert read(out, "vegshare")[roof] == 0.0 and read(out, "intensity")[roof] == 100.0


def test_a_tree_cell_of_three_return_pulses_gives_their_mean_returns_and_first_minus_last_height(made):
    out, _ = made
    tree = cell(*TREE)
    assert read(out, "returns")[tree] == pytest.approx(3.0)
    assert read(out, "fml")[tree] == pytest.approx((9.0 + 9.4) / 2 - (0.0 + 0.2) / 2, abs=1e-4)
    assert read(out, "vegshare")[tree] == pytest.approx(4 / 6)
    assert read(out, "intensity")[tree] == pytest.approx((20 + 30) / 2)  # first returns only


def test_a_mixed_cell_averages_over_its_points_and_first_and_last_returns(made):
    out, _ = made
    mixed = cell(*MIXED)
    assert read(out, "returns")[mixed] == pytest.approx((2 + 2 + 1 + 1) / 4)
    assert read(out, "fml")[mixed] == pytest.approx((3.0 + 0 + 0) / 3 - 0.0, abs=1e-4)
    assert read(out, "vegshare")[mixed] == pytest.approx(1 / 4)
    assert read(out, "intensity")[mixed] == pytest.approx((10 + 40 + 40) / 3)


def test_ground_at_zero_metres_is_a_value_and_cells_without_points_or_with_only_water_are_nodata(made):
    out, _ = made
    ground = cell(0, 0)
    assert read(out, "dsm")[ground] == 0.0 and read(out, "fml")[ground] == 0.0
    assert read(out, "returns")[ground] == 1.0 and read(out, "vegshare")[ground] == 0.0
    for name in SCENE_CHANNELS:
        values = read(out, name)
        assert values[cell(1, 4)] == NODATA and values[cell(*WATER)] == NODATA, name
        assert (values != NODATA).sum() == SIZE * SIZE - 9 - 1, name


def test_gaps_are_filled_from_the_nearest_cell_within_the_radius_and_water_stays_nodata(tmp_path):
    laz = write_cloud(tmp_path / "cloud.laz", cloud())
    config = RasterizeConfig(pixel_size_m=1.0, fill_radius_m=1.0, classes={"buildings": 6})
    rasterize([laz], config, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    for name in SCENE_CHANNELS:
        values = read(out, name)
        assert values[cell(1, 3)] == values[cell(1, 2)] and values[cell(1, 5)] == values[cell(1, 6)], name
        assert values[cell(1, 4)] == NODATA and values[cell(*WATER)] == NODATA, name  # 2 m away; water
    assert read(out, "fml")[cell(1, 2)] == 0.0  # the ground cell it copies: 0 is a value


def test_channels_are_the_same_whatever_the_chunk_size_and_number_of_files(tmp_path):
    points = cloud()
    west = points["x"] < X0 + 3
    one = write_cloud(tmp_path / "one.laz", points)
    parts = [write_cloud(tmp_path / f"{side}.laz", {k: v[mask] for k, v in points.items()})
             for side, mask in (("west", west), ("east", ~west))]
    config = RasterizeConfig(pixel_size_m=1.0, classes={"buildings": 6})
    rasterize([one], config, tmp_path / "one", progress=False)
    rasterize(parts, config.model_copy(update={"chunk_points": 7}), tmp_path / "two", progress=False)
    for name in SCENE_CHANNELS:
        assert np.array_equal(read(tmp_path / "one", name), read(tmp_path / "two", name)), name


def test_dataset_yaml_lists_the_channels_and_loads_as_a_spec(made):
    out, _ = made
    for source in (out / "dataset.yaml", out):
        scene = load_spec(source).scenes[0]
        assert set(scene.channels) == set(SCENE_CHANNELS), source
        assert all((out / Path(path).name).exists() for path in scene.channels.values())


def test_manifest_records_each_channels_valid_cells_and_mean(made):
    out, returned = made
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["channels"] == returned["channels"] and manifest["channels"]["named"] is False
    stats = manifest["channels"]["written"]["returns"]
    returns = read(out, "returns")
    assert stats["valid_cells"] == (returns != NODATA).sum() == stats["measured_cells"]
    assert stats["mean"] == pytest.approx(float(returns[returns != NODATA].mean()), abs=1e-4)
    assert {f"{name}.tif" for name in SCENE_CHANNELS} <= set(manifest["outputs"])
    assert sorted(p.name for p in out.iterdir() if p.name != ".demseg-output") == sorted(manifest["outputs"])
    assert (out / ".demseg-output").read_text() == "rasterize"
    assert manifest["inputs"][0]["carries"]["most_returns"] == 3


@pytest.mark.parametrize("lacking, channels, pattern", [
    ("return numbers", "returns", "carries no return numbers"),
    ("multiple returns", "fml,returns", "carries no return numbers"),
    ("intensity", "intensity", "carries no intensity (every point has intensity 0)"),
    ("vegetation class", "vegshare", "has no point of a vegetation class (ASPRS 3, 4, 5)"),
])
def test_a_named_channel_the_file_cannot_make_exits_2_in_one_line_and_writes_nothing(
        tmp_path, capsys, lacking, channels, pattern):
    code, err, out = run_cli(tmp_path, capsys, without(lacking), "--channels", channels)
    assert code == 2 and len(err) == 1 and err[0].startswith("demseg: error: "), err
    assert pattern in err[0] and "cannot make channel" in err[0] and "a.laz" in err[0], err
    assert no_output_left(out)


def test_by_default_channels_the_file_cannot_make_are_skipped_with_a_one_line_warning_each(tmp_path, capsys):
    code, err, out = run_cli(tmp_path, capsys, without("return numbers"))
    assert code == 0, err
    assert err == [f"demseg: warning: channel {name!r} is not written: {tmp_path / 'a.laz'} carries no return "
                   "numbers (every point is a single or unnumbered return)" for name in ("returns", "fml")]
    assert set(load_spec(out).scenes[0].channels) == {"vegshare", "intensity"}
    assert not (out / "returns.tif").exists() and not (out / "fml.tif").exists()
    assert read(out, "intensity")[cell(5, 5)] == 100.0  # unnumbered returns count as single, so as first
    skipped = json.loads((out / "manifest.json").read_text())["channels"]["skipped"]
    assert set(skipped) == {"returns", "fml"}


def test_vegshare_is_skipped_without_a_vegetation_class_as_in_ahn3(tmp_path, capsys):
    code, err, out = run_cli(tmp_path, capsys, without("vegetation class"))
    assert code == 0 and len(err) == 1 and "channel 'vegshare' is not written" in err[0], err
    assert list(load_spec(out).scenes[0].channels) == ["returns", "fml", "intensity"]
    assert read(out, "fml")[cell(*TREE)] == pytest.approx(9.1, abs=1e-4)  # the others do not need classes


def test_one_file_without_return_numbers_among_others_is_named_in_the_warning(tmp_path, capsys):
    points, bare = cloud(), without("return numbers")
    west = points["x"] < X0 + 3
    files = [write_cloud(tmp_path / "west.laz", {k: v[west] for k, v in points.items()}),
             write_cloud(tmp_path / "east.laz", {k: v[~west] for k, v in bare.items()})]
    config = RasterizeConfig(pixel_size_m=1.0, classes={"buildings": 6})
    with pytest.warns(UserWarning) as warned:
        manifest = rasterize(files, config, tmp_path / "out", progress=False)
    assert [str(w.message) for w in warned] == [
        f"channel {name!r} is not written: {files[1]} carries no return numbers (every point is a single or "
        "unnumbered return)" for name in ("returns", "fml")]
    assert list(manifest["channels"]["written"]) == ["vegshare", "intensity"]


@pytest.mark.parametrize("value", ["none", ""])
def test_channels_none_writes_no_channel(tmp_path, capsys, value):
    code, err, out = run_cli(tmp_path, capsys, without("return numbers"), "--channels", value)
    assert code == 0 and err == [], err
    assert load_spec(out).scenes[0].channels == {}
    assert not any((out / f"{name}.tif").exists() for name in SCENE_CHANNELS)


def test_an_unknown_channel_name_exits_2_in_one_line(tmp_path, capsys):
    code, err, out = run_cli(tmp_path, capsys, cloud(), "--channels", "returns,height")
    assert code == 2 and len(err) == 1 and "unknown channel(s) ['height']" in err[0], err
    assert no_output_left(out)


@pytest.mark.parametrize("flag, expected", [
    ([], RasterizeConfig()),
    (["--channels", "fml,returns"], RasterizeConfig(channels=["fml", "returns"])),
    (["--channels", "none"], RasterizeConfig(channels=[])),
])
def test_the_channels_flag_builds_the_config_python_would(flag, expected):
    config = parse_configs(["rasterize", "a.laz", "--out", "o", *flag])["rasterize"]
    assert config == expected and config.channels_named == bool(flag)
