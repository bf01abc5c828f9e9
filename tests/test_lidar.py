"""demseg.lidar: classified point clouds to DSM, DTM, nDSM, labels and a dataset spec.

The tiny scene (1 m cells, 20 x 20 m, four points per cell at the quarter positions):
ground (class 2) on a plane rising 0.1 m per metre eastwards, a flat roof (class 6) with no ground
below, a road strip (class 11) at ground height, one tree cell (class 5 above class 2), a water
corner holding only class 9, and a corner with no points at all.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import laspy
import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from conftest import UTM31, write_raster

from demseg.data.scene import load_scenes
from demseg.data.spec import load_spec
from demseg.errors import DemsegError
from demseg.lidar import RasterizeConfig, rasterize, rasterize_config

# the tiny scene carries no return numbers and no intensity, so the default channels warn; they are
# specified in test_lidar_channels.py
pytestmark = pytest.mark.filterwarnings("ignore:channel '.*' is not written:UserWarning")

X0, Y0 = 1000.0, 2000.0  # lower-left corner of the scene
SIZE = 20  # cells (metres) per side
ROOF = (4, 10, 4, 10)  # x from, x to, y from, y to: in cells east / north of the corner
ROAD_ROWS = (14, 16)  # y cells of the east-west road strip
TREE = (15, 5)
WATER = (16, 20, 0, 3)
GAP = (0, 4, 16, 20)
ROOF_Z = 20.0
QUARTERS = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])


def ground_z(x: np.ndarray) -> np.ndarray:
    return 10.0 + 0.1 * (x - X0)


def _inside(i: int, j: int, box: tuple[int, int, int, int]) -> bool:
    return box[0] <= i < box[1] and box[2] <= j < box[3]


def _cell_points(i: int, j: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    x, y = X0 + i + QUARTERS[:, 0], Y0 + j + QUARTERS[:, 1]
    if _inside(i, j, GAP):
        return []
    if _inside(i, j, WATER):
        return [(x, y, np.full(4, 9.5), 9)]
    if _inside(i, j, ROOF):
        return [(x, y, ROOF_Z + np.array([0.0, 0.1, 0.2, 0.3]), 6)]
    points = [(x, y, ground_z(x), 11 if ROAD_ROWS[0] <= j < ROAD_ROWS[1] else 2)]
    if (i, j) == TREE:
        points.append((x, y, ground_z(x) + 8 + np.array([0.0, 0.1, 0.2, 0.3]), 5))
    return points


def scene_points(columns: range = range(SIZE), ground: bool = True) -> dict[str, np.ndarray]:
    """x, y, z and classification of the tiny scene (optionally only some columns, or without ground)."""
    parts = [p for i in columns for j in range(SIZE) for p in _cell_points(i, j) if ground or p[3] != 2]
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts]),
            "z": np.concatenate([p[2] for p in parts]),
            "classification": np.concatenate([np.full(len(p[0]), p[3], np.uint8) for p in parts])}


def write_points(path: Path, points: dict[str, np.ndarray], crs: str | None = UTM31, version: str = "1.4",
                 point_format: int = 6, withheld: np.ndarray | None = None) -> Path:
    """Write points as LAS or LAZ (by the suffix), declaring ``crs`` (GeoKeys before LAS 1.4, WKT after)."""
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([X0, Y0, 0.0])
    if crs is not None:
        header.add_crs(pyproj.CRS.from_user_input(crs))
    las = laspy.LasData(header)
    las.x, las.y, las.z = points["x"], points["y"], points["z"]
    las.classification = points["classification"]
    if withheld is not None:
        las.withheld = withheld
    las.write(path)
    return path


def cell(i: int, j: int, top: float = Y0 + SIZE, left: float = X0) -> tuple[int, int]:
    """(row, col) of scene cell (i east, j north) on a 1 m grid with the given top-left corner."""
    return int(top - (Y0 + j) - 1), int(X0 + i - left)


def read(out: Path, name: str) -> np.ndarray:
    with rasterio.open(out / f"{name}.tif") as src:
        return src.read(1)


def no_output_left(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, dict, Path]:
    """The tiny scene as LAZ plus a noise point (class 7) and a withheld point, rasterised once at 1 m."""
    folder = tmp_path_factory.mktemp("lidar")
    points = scene_points()
    ground_cell = (1, 1)
    for z, code in ((100.0, 7), (200.0, 2)):  # a noise point, then a withheld ground point: both must vanish
        for key, value in (("x", X0 + ground_cell[0] + 0.5), ("y", Y0 + ground_cell[1] + 0.5), ("z", z),
                           ("classification", code)):
            points[key] = np.append(points[key], value).astype(points[key].dtype)
    withheld = np.zeros(len(points["x"]), bool)
    withheld[-1] = True
    laz = write_points(folder / "scene.laz", points, withheld=withheld)
    config = RasterizeConfig(pixel_size_m=1.0, fill_radius_m=1.0)
    manifest = rasterize([laz], config, folder / "out", progress=False)
    return folder / "out", manifest, laz


def test_dsm_keeps_the_highest_return_per_cell(scene):
    out, _, _ = scene
    dsm = read(out, "dsm")
    assert dsm[cell(6, 6)] == pytest.approx(ROOF_Z + 0.3, abs=1e-4)
    tree_x = X0 + TREE[0] + 0.75
    assert dsm[cell(*TREE)] == pytest.approx(ground_z(tree_x) + 8.3, abs=1e-4)
    assert dsm[cell(1, 1)] == pytest.approx(ground_z(X0 + 1.75), abs=1e-4)  # noise, withheld point ignored


def test_dtm_is_the_mean_ground_height_and_linear_under_roofs_and_roads(scene):
    out, _, _ = scene
    dtm = read(out, "dtm")
    for i, j in [(1, 1), TREE, (6, 6), (4, 4), (9, 9), (12, 15), (0, 14)]:  # ground, tree, roof, road cells
        assert dtm[cell(i, j)] == pytest.approx(ground_z(X0 + i + 0.5), abs=1e-3), (i, j)


def test_ndsm_is_dsm_minus_dtm_with_nodata_where_either_is(scene):
    out, _, _ = scene
    dsm, dtm, ndsm = read(out, "dsm"), read(out, "dtm"), read(out, "ndsm")
    assert ndsm[cell(6, 6)] == pytest.approx(ROOF_Z + 0.3 - ground_z(X0 + 6.5), abs=1e-3)
    valid = (dsm != -9999) & (dtm != -9999)
    assert np.allclose(ndsm[valid], dsm[valid] - dtm[valid], atol=1e-5)
    assert (ndsm[~valid] == -9999).all() and (dtm[dsm == -9999] == -9999).all()


def test_water_only_cells_and_gaps_beyond_the_fill_radius_stay_nodata(scene):
    out, _, _ = scene
    dsm = read(out, "dsm")
    assert (dsm[cell(17, 1)] == -9999) and (dsm[cell(19, 0)] == -9999)  # water only
    assert dsm[cell(0, 19)] == -9999  # 4 m from the nearest point, radius 1 m
    # a gap cell 1 m from points copies its nearest neighbour's height
    assert dsm[cell(0, 16)] == pytest.approx(dsm[cell(0, 15)])
    assert dsm[cell(3, 17)] == pytest.approx(dsm[cell(4, 17)])
    assert dsm[cell(2, 17)] == -9999


def test_an_empty_cell_whose_nearest_points_are_water_stays_nodata(tmp_path):
    points = scene_points()
    hole = (np.floor(points["x"] - X0) == 17) & (np.floor(points["y"] - Y0) == 1)  # inside the water corner
    laz = write_points(tmp_path / "scene.laz", {key: value[~hole] for key, value in points.items()})
    rasterize([laz], RasterizeConfig(pixel_size_m=1.0, fill_radius_m=2.0), tmp_path / "out", progress=False)
    dsm = read(tmp_path / "out", "dsm")
    assert dsm[cell(17, 1)] == -9999  # land lies 2 m away, water 1 m
    assert dsm[cell(2, 17)] == pytest.approx(dsm[cell(2, 15)])  # a land gap 2 m from points is filled


def test_a_tied_vote_goes_to_the_class_of_the_highest_return(tmp_path):
    points = scene_points()
    for i, high_class in ((12, 6), (13, 2)):  # two roof points and two ground points per cell
        in_cell = (np.floor(points["x"] - X0) == i) & (np.floor(points["y"] - Y0) == 10)
        half = np.nonzero(in_cell)[0][:2]
        points["classification"][half] = 6
        points["z"][half] += 5.0 if high_class == 6 else -5.0
    laz = write_points(tmp_path / "scene.laz", points)
    rasterize([laz], RasterizeConfig(pixel_size_m=1.0), tmp_path / "out", progress=False)
    labels = read(tmp_path / "out", "labels")
    assert labels[cell(12, 10)] == 1 and labels[cell(13, 10)] == 0


def test_tin_is_exact_on_a_plane_under_a_large_hole_in_any_batch_size():
    from demseg.lidar.tin import tin_interpolate

    rows, cols = np.mgrid[0:60, 0:50]
    has = np.ones(rows.shape, bool)
    has[5:55, 8:45] = False
    plane = 3.0 + 0.2 * rows - 0.1 * cols
    for batch_cells in (16, 1 << 18):
        filled, _ = tin_interpolate(rows[has], cols[has], plane[has], ~has, (0.5, 1.0),
                                    batch_cells=batch_cells)
        assert np.allclose(filled[~has], plane[~has], atol=1e-9) and np.isnan(filled[has]).all()


def test_tin_filled_block_by_block_equals_the_tin_of_the_whole_grid():
    from demseg.lidar.tin import fill_gaps

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:90, 0:70]
    vertices = rng.random(rows.shape) < 0.3
    vertices[20:70, 15:60] = False  # a building far larger than a block and its first halo
    vertices[:, :3] = False  # and a strip outside the vertices' hull
    surface = (np.sin(rows / 7.0) * 3 + (cols / 9.0) ** 2).astype(np.float32)
    results = []
    for block_cells, first_halo_cells in ((8, 1), (1000, 1000)):  # many small blocks whose halo must grow
        heights = np.where(vertices, surface, np.float32(np.nan))
        fill_gaps(heights, vertices, ~vertices, (0.5, 0.5), block_cells, first_halo_cells)
        results.append(heights)
    blocks, whole = results
    assert np.isnan(whole[:, :3]).all() and np.isnan(whole[:, 3:]).mean() < 0.05
    both = ~np.isnan(blocks) & ~np.isnan(whole)
    assert both.sum() > 0.9 * np.isfinite(whole).sum()
    assert np.allclose(blocks[both], whole[both], atol=1e-5)
    # blocks leave NaN (for the nearest ground cell) only on the hull's edge, here by the grid's border
    rows_left, cols_left = np.nonzero(np.isnan(blocks) & ~np.isnan(whole))
    assert np.all((rows_left <= 1) | (rows_left >= 88) | (cols_left <= 4) | (cols_left >= 68))


def test_labels_vote_per_cell_and_mark_cells_without_points_or_dsm_255(scene):
    out, _, _ = scene
    labels = read(out, "labels")
    assert labels[cell(6, 6)] == 1 and labels[cell(3, 14)] == 2
    assert labels[cell(1, 1)] == 0
    assert labels[cell(*TREE)] == 0  # 4 tree points tie 4 ground points, and trees are "other"
    assert labels[cell(17, 1)] == 255 and labels[cell(3, 17)] == 255  # water only; gap filled in the DSM
    assert ((labels == 1).sum(), (labels == 2).sum()) == (36, 2 * SIZE)


def test_point_count_counts_every_kept_point_per_cell(scene):
    out, manifest, _ = scene
    count = read(out, "point_count")
    assert count.dtype == np.uint32
    assert count[cell(1, 1)] == 4 and count[cell(*TREE)] == 8 and count[cell(17, 1)] == 4
    assert count[cell(0, 19)] == 0 and count.sum() == manifest["points"]["used"]
    assert manifest["points"]["dropped_class_or_withheld"] == 2


def test_grid_is_snapped_to_the_pixel_size_and_takes_the_files_crs(scene):
    out, manifest, _ = scene
    with rasterio.open(out / "dsm.tif") as src:
        assert src.crs.to_epsg() == 32631 and src.transform == Affine(1.0, 0, X0, 0, -1.0, Y0 + SIZE)
        assert (src.width, src.height, src.nodata, src.dtypes[0]) == (SIZE, SIZE, -9999.0, "float32")
    assert manifest["crs"] == UTM31


def test_grid_origin_is_a_multiple_of_an_uneven_pixel_size(tmp_path):
    laz = write_points(tmp_path / "scene.laz", scene_points())
    rasterize([laz], RasterizeConfig(pixel_size_m=1.5), tmp_path / "out", progress=False)
    with rasterio.open(tmp_path / "out" / "dsm.tif") as src:
        left, top = src.transform.c, src.transform.f
        assert (left, top) == (999.0, 2020.5) and src.transform.a == 1.5
        assert left + src.width * 1.5 >= X0 + SIZE - 0.25 and top - src.height * 1.5 <= Y0 + 0.25


def test_like_snaps_the_outputs_to_an_existing_rasters_grid(tmp_path):
    laz = write_points(tmp_path / "scene.laz", scene_points())
    like = write_raster(tmp_path / "like.tif", np.zeros((26, 30), np.float32), origin=(X0 - 2, Y0 + SIZE + 3))
    rasterize([laz], RasterizeConfig(like=like, fill_radius_m=0), tmp_path / "out", progress=False)
    with rasterio.open(tmp_path / "out" / "dsm.tif") as src:
        assert src.transform == Affine(1.0, 0, X0 - 2, 0, -1.0, Y0 + SIZE + 3) and src.shape == (26, 30)
        dsm = src.read(1)
    assert dsm[cell(6, 6, top=Y0 + SIZE + 3, left=X0 - 2)] == pytest.approx(ROOF_Z + 0.3, abs=1e-4)
    assert (dsm[:3] == -9999).all() and (dsm[:, :2] == -9999).all()


def test_chunked_streaming_of_two_files_gives_the_rasters_of_one_file_in_one_chunk(tmp_path):
    whole = write_points(tmp_path / "whole.laz", scene_points())
    west = write_points(tmp_path / "west.las", scene_points(range(0, 9)), version="1.2", point_format=1)
    east = write_points(tmp_path / "east.laz", scene_points(range(9, SIZE)))
    rasterize([whole], RasterizeConfig(pixel_size_m=1.0), tmp_path / "one", progress=False)
    rasterize([west, east], RasterizeConfig(pixel_size_m=1.0, chunk_points=97), tmp_path / "two",
              progress=False)
    for name in ("dsm", "dtm", "ndsm", "labels", "point_count"):
        assert np.array_equal(read(tmp_path / "one", name), read(tmp_path / "two", name)), name


def test_dataset_yaml_loads_as_a_spec_and_a_scene(scene):
    out, _, _ = scene
    for source in (out / "dataset.yaml", out):
        spec = load_spec(source)
        labels = spec.scenes[0].labels
        assert spec.scenes[0].dem == "dsm.tif" and spec.scenes[0].dtm == "dtm.tif"
        assert labels.classes == {"buildings": 1, "roads": 2} and labels.ignore == 255
    loaded = load_scenes(spec)[0]
    assert loaded.targets["buildings"][cell(6, 6)] == 1 and loaded.targets["roads"][cell(3, 14)] == 1
    assert loaded.targets["buildings"][cell(17, 1)] == 255 and np.isnan(loaded.dtm[cell(17, 1)])


def test_manifest_records_inputs_with_hashes_class_counts_and_config(scene):
    out, returned, laz = scene
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(laz.read_bytes()).hexdigest()
    assert manifest["points"]["per_class"] == {"2": 1184, "5": 4, "6": 144, "9": 48, "11": 160}
    assert manifest["config"]["pixel_size_m"] == 1.0
    assert manifest["config"]["classes"] == {"buildings": 6, "roads": 11}
    assert manifest["seconds"] > 0 and returned["out_dir"] == str(out)
    assert sorted(p.name for p in out.iterdir() if p.name != ".demseg-output") == sorted(manifest["outputs"])
    assert (out / ".demseg-output").read_text() == "rasterize"  # the marker names the command that made it


def test_las_1_2_geokeys_and_a_compound_crs_resolve_to_the_horizontal_crs(tmp_path):
    old = write_points(tmp_path / "old.las", scene_points(), crs="EPSG:28992", version="1.2", point_format=1)
    compound = write_points(tmp_path / "compound.laz", scene_points(), crs="EPSG:7415")
    config = RasterizeConfig(pixel_size_m=2.0, crs="EPSG:28992")
    manifest = rasterize([old, compound], config, tmp_path / "out", progress=False)
    assert manifest["crs"] == "EPSG:28992" and manifest["vertical_crs"] == "NAP height"


def test_a_class_that_no_point_has_warns_and_is_left_out_of_the_spec(tmp_path):
    points = scene_points()
    points["classification"][points["classification"] == 11] = 2
    laz = write_points(tmp_path / "scene.laz", points)
    with pytest.warns(UserWarning, match=r"no point has ASPRS class 11 \(roads\)"):
        rasterize([laz], RasterizeConfig(pixel_size_m=1.0), tmp_path / "out", progress=False)
    assert load_spec(tmp_path / "out").scenes[0].labels.classes == {"buildings": 1}


def test_overwrite_replaces_an_earlier_rasterize_output_and_never_a_users_folder(tmp_path):
    laz = write_points(tmp_path / "scene.laz", scene_points())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old.txt").write_text("old")
    for overwrite in (False, True):
        with pytest.raises(DemsegError, match="holds more than an earlier demseg rasterize output"):
            rasterize([laz], RasterizeConfig(pixel_size_m=2.0), tmp_path / "mine", overwrite=overwrite,
                      progress=False)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["old.txt"]  # refused: left as it was
    rasterize([laz], RasterizeConfig(pixel_size_m=2.0), tmp_path / "out", progress=False)
    with pytest.raises(DemsegError, match="output folder exists"):
        rasterize([laz], RasterizeConfig(pixel_size_m=2.0), tmp_path / "out", progress=False)
    rasterize([laz], RasterizeConfig(pixel_size_m=1.0), tmp_path / "out", overwrite=True, progress=False)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["pixel_size_m"] == 1.0
    assert not list(tmp_path.glob(".out.*"))


def test_rasterize_never_writes_over_the_folder_that_holds_its_point_clouds(tmp_path):
    (tmp_path / "data").mkdir()
    laz = write_points(tmp_path / "data" / "scene.laz", scene_points())
    for overwrite in (False, True):
        with pytest.raises(DemsegError, match="holds an input"):
            rasterize([laz], RasterizeConfig(pixel_size_m=2.0), tmp_path / "data", overwrite=overwrite,
                      progress=False)
    assert laz.is_file()


def test_a_failure_while_writing_leaves_no_output_folder(tmp_path, monkeypatch):
    import demseg.lidar.pipeline as module

    laz = write_points(tmp_path / "scene.laz", scene_points())
    written = []

    def failing_write(path, *args, **kwargs):
        if len(written) == 2:
            raise DemsegError("disk full (simulated)")
        written.append(path)
        return original(path, *args, **kwargs)

    original = module.write_geotiff
    monkeypatch.setattr(module, "write_geotiff", failing_write)
    with pytest.raises(DemsegError, match="simulated"):
        rasterize([laz], RasterizeConfig(pixel_size_m=2.0), tmp_path / "out", progress=False)
    assert len(written) == 2 and no_output_left(tmp_path / "out")


def _bad_file(tmp_path: Path, case: str) -> tuple[list[Path], dict]:
    """Input files and config fields for one bad-input case."""
    points = scene_points()
    if case == "no CRS":
        return [write_points(tmp_path / "a.laz", points, crs=None)], {}
    if case == "geographic CRS":
        return [write_points(tmp_path / "a.laz", points, crs="EPSG:4326")], {}
    if case == "geographic --crs":
        return [write_points(tmp_path / "a.laz", points, crs=None)], {"crs": "EPSG:4326"}
    if case == "CRS in feet":
        return [write_points(tmp_path / "a.laz", points, crs="EPSG:2263")], {}
    if case == "empty":
        return [write_points(tmp_path / "a.las", {k: v[:0] for k, v in points.items()})], {}
    if case == "truncated LAZ":
        whole = write_points(tmp_path / "whole.laz", points).read_bytes()
        (tmp_path / "a.laz").write_bytes(whole[: len(whole) * 2 // 3])
        return [tmp_path / "a.laz"], {}
    if case == "not a LAS file":
        (tmp_path / "a.laz").write_text("hello")
        return [tmp_path / "a.laz"], {}
    if case == "different CRSs":
        other = write_points(tmp_path / "b.laz", points, crs="EPSG:2154")
        return [write_points(tmp_path / "a.laz", points), other], {}
    if case == "CRS contradicts --crs":
        return [write_points(tmp_path / "a.laz", points)], {"crs": "EPSG:2154"}
    if case == "missing file":
        return [tmp_path / "missing.laz"], {}
    if case == "no ground":
        return [write_points(tmp_path / "a.laz", scene_points(ground=False))], {}
    if case == "--like missing":
        return [write_points(tmp_path / "a.laz", points)], {"like": tmp_path / "like.tif"}
    if case == "--like in another CRS":
        like = write_raster(tmp_path / "like.tif", np.zeros((4, 4), np.float32), crs="EPSG:2154")
        return [write_points(tmp_path / "a.laz", points)], {"like": like}
    if case == "--like far away":
        like = write_raster(tmp_path / "like.tif", np.zeros((4, 4), np.float32), origin=(0.0, 10.0))
        return [write_points(tmp_path / "a.laz", points)], {"like": like}
    raise AssertionError(case)


@pytest.mark.parametrize("case, pattern", [
    ("no CRS", r"has no CRS: .*a\.laz; pass it with --crs"),
    ("geographic CRS", r"geographic CRS"),
    ("geographic --crs", r"geographic CRS"),
    ("CRS in feet", r"units of US survey foot, not metres"),
    ("empty", r"has no points: .*a\.las"),
    ("truncated LAZ", r"corrupt or truncated: .*a\.laz"),
    ("not a LAS file", r"not a readable LAS/LAZ file"),
    ("different CRSs", r"different CRSs: .*EPSG:32631.*EPSG:2154"),
    ("CRS contradicts --crs", r"declares EPSG:32631 but --crs says EPSG:2154"),
    ("missing file", r"point cloud not found: .*missing\.laz"),
    ("no ground", r"no ground points \(ASPRS class 2\)"),
    ("--like missing", r"--like raster not found"),
    ("--like in another CRS", r"--like raster is in EPSG:2154 but the points are in EPSG:32631"),
    ("--like far away", r"no usable point: .* outside the --like grid"),
])
def test_bad_input_is_one_clear_error_and_leaves_no_output(tmp_path, case, pattern):
    files, fields = _bad_file(tmp_path, case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DemsegError, match=pattern) as raised:
            rasterize(files, RasterizeConfig(pixel_size_m=1.0, **fields), tmp_path / "out", progress=False)
    assert "\n" not in str(raised.value)
    assert no_output_left(tmp_path / "out")


@pytest.mark.parametrize("case, flags, pattern", [
    ("no CRS", [], "has no CRS"),
    ("geographic CRS", [], "geographic CRS"),
    ("empty", [], "has no points"),
    ("truncated LAZ", [], "corrupt or truncated"),
    ("different CRSs", [], "different CRSs"),
    ("no ground", [], "no ground points"),
    ("good", ["--pixel-size-m", "0"], "--pixel-size-m: must be positive"),
    ("good", ["--pixel-size-m", "-0.5"], "--pixel-size-m: must be positive"),
    ("existing output", [], "output folder exists"),
])
def test_rasterize_command_says_what_is_wrong_in_one_line_and_exits_2(tmp_path, capsys, case, flags, pattern):
    from demseg.cli import main

    out = tmp_path / "out"
    if case in ("good", "existing output"):
        files = [write_points(tmp_path / "a.laz", scene_points())]
    else:
        files, _ = _bad_file(tmp_path, case)
    if case == "existing output":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    code = main(["rasterize", *map(str, files), "--out", str(out), "--quiet", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("demseg: error: ") and pattern in err[0], err
    if case == "existing output":
        assert [p.name for p in out.iterdir()] == ["keep.txt"] and not list(tmp_path.glob(".out.*"))
    else:
        assert no_output_left(out)


def test_rasterize_command_warns_about_an_absent_class_and_still_writes_a_scene(tmp_path, capsys):
    from demseg.cli import main

    points = scene_points()
    points["classification"][points["classification"] == 11] = 2
    laz = write_points(tmp_path / "a.laz", points)
    code = main(["rasterize", str(laz), "--pixel-size-m", "1", "--classes", "buildings=6,roads=11", "--out",
                 str(tmp_path / "out"), "--quiet", "--channels", "none"])  # the tiny scene has no return numbers
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.strip() == ("demseg: warning: no point has ASPRS class 11 (roads); roads is left out "
                                    "of the labels")
    assert "rasterised 1,540 points onto 20 x 20 cells of 1 m (EPSG:32631)" in captured.out
    assert load_spec(tmp_path / "out").scenes[0].labels.classes == {"buildings": 1}


@pytest.mark.parametrize("fields, pattern", [
    ({"pixel_size_m": 0}, r"pixel_size_m: .*greater than 0"),
    ({"pixel_size_m": -0.5}, r"pixel_size_m: .*greater than 0"),
    ({"classes": {"trees": 5}}, r"unknown task"),
    ({"classes": {"buildings": 6, "roads": 6}}, r"share one ASPRS class code"),
    ({"ground_class": 7}, r"drop_classes"),
    ({"fill_radius": 3}, r"fill_radius: Extra inputs"),
])
def test_bad_options_are_one_clear_error(fields, pattern):
    with pytest.raises(DemsegError, match=pattern):
        rasterize_config(**fields)


def test_every_option_has_a_default_and_a_description_for_the_cli():
    for name, field in RasterizeConfig.model_fields.items():
        assert field.description and not field.is_required(), name


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_amsterdam_ahn3_rasterised_on_the_shipped_grid_matches_the_shipped_rasters(shared_real, tmp_path):
    folder = shared_real / "ahn3_bag_amsterdam_bag3d"
    files = sorted((folder / "raw" / "ahn3").glob("*.laz"))
    # the shipped rasters' recipe (README.txt): 0.5 m, nearest point within 3 m
    config = RasterizeConfig(crs="EPSG:28992", like=folder / "dsm.tif", fill_radius_m=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no road points (class 11) in AHN3
        manifest = rasterize(files, config, tmp_path / "out", progress=False)
    figures = {}
    for name in ("dsm", "dtm"):
        ours, shipped = read(tmp_path / "out", name), read(folder, name)
        both = (ours != -9999) & (shipped != -9999)
        difference = np.abs(ours - shipped)[both]
        figures[name] = float(np.median(difference))
        p95 = np.percentile(difference, 95)
        figures[f"{name}_mean_p95"] = f"mean {difference.mean():.4f} m, p95 {p95:.4f} m"
        figures[f"{name}_cells_compared"] = int(both.sum())
    ours, shipped = read(tmp_path / "out", "labels"), read(folder, "labels_class6")
    labelled = (ours != 255) & (shipped != 255)
    figures["iou_class6"] = _iou((ours == 1) & labelled, (shipped == 1) & labelled)
    print(f"\nAmsterdam AHN3 ({manifest['points']['used']} points, {manifest['seconds']:.1f} s): "
          f"DSM median |diff| {figures['dsm']:.4f} m ({figures['dsm_mean_p95']}) over "
          f"{figures['dsm_cells_compared']} cells; DTM median |diff| {figures['dtm']:.4f} m "
          f"({figures['dtm_mean_p95']}) over {figures['dtm_cells_compared']} cells; "
          f"class-6 IoU {figures['iou_class6']:.4f}")
    assert figures["dsm"] < 0.10 and figures["iou_class6"] >= 0.95
    assert figures["dtm"] < 0.10
    assert figures["dsm_cells_compared"] > 0.9 * (read(folder, "dsm") != -9999).sum()
