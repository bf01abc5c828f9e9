"""One scene in memory: the layout rasterised into DSM, DTM, labels and masks, deterministic per seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy import ndimage
from shapely.geometry import box

from demseg.data.spec import LABEL_CODES
from demseg.data.synth.canopy import rough_canopy
from demseg.data.synth.canvas import Canvas
from demseg.data.synth.districts import DEFAULT_STYLE, STYLES
from demseg.data.synth.geometry import object_array
from demseg.data.synth.layout import Layout, lay_out, lay_out_districts
from demseg.data.synth.roads import SURFACE_CODES, TRAFFIC_SURFACES, road_ground
from demseg.data.synth.roofs import add_buildings
from demseg.data.synth.survey import as_survey, interpolated_water, lidar_survey, tin_filled
from demseg.data.synth.trees import Trees, scene_trees
from demseg.data.synth.vegetation import dome_canopy, hedge_heights, leafy_roughness, version_1_trees
from demseg.data.synth.vehicles import car_heights
from demseg.data.synth.water import banks_m
from demseg.errors import DemsegError
from demseg.io.raster import memory_bytes

BUILDING, ROAD, VEGETATION = (LABEL_CODES[name] for name in ("buildings", "roads", "vegetation"))
LABEL_NODATA = 255
HIGH_VEGETATION_M = 1.5  # vegetation taller than this is labelled: trees, tall hedges, not lawns or shrubs
MIN_SIZE_PX = 64
MAX_PIXEL_SIZE_M = 5.0  # beyond this, buildings and roads are only a few pixels wide
MIN_EXTENT_M = 32.0  # a scene narrower than this (64 px at 0.5 m) holds no street with a building
BYTES_PER_SCENE_PIXEL = 256  # peak memory of generating a scene (measured: 180 to 235 bytes per pixel)


@dataclass
class SynthScene:
    """One synthetic scene: rasters on a north-up grid and the vectors they were burnt from.

    Vectors are in metres in the scene's local frame: x east, y north, origin at the south-west
    corner of the scene, so they lie in ``[0, extent_m]``. Per-road and per-tree arrays are aligned.

    Labels follow the map: a building's footprint is building and a traffic area (carriageway, parking bay,
    cycle path, tram bed) is road even where a crown reaches over them (the DSM shows the crown where it is higher); vegetation is where trees or hedges
    taller than HIGH_VEGETATION_M are the top surface over anything else, water included (crowns over
    water return the laser); interpolated water is background; nodata is nodata whatever lies there.
    """

    seed: int
    pixel_size_m: float
    style: str  # one of STYLES
    districts: tuple[str, ...]  # the scene's districts, the main one first
    dsm: np.ndarray  # float32 (H, W), NaN where there is no return (water left so, dropouts)
    dtm: np.ndarray  # float32 (H, W), bare earth with the road cut, NaN where the DSM is
    labels: np.ndarray  # uint8 (H, W): 0 background, 1 building, 2 road, 3 vegetation, 255 nodata (see below)
    # uint8 (H, W): the labels with road surfaces told apart (SURFACE_CODES: carriageway, parking, cycle path,
    # tram, sidewalk) instead of road (2), sidewalks where no other label is
    surfaces: np.ndarray
    buildings: np.ndarray  # shapely Polygons (courtyards and patios as holes; adjoining units share walls)
    building_heights_m: np.ndarray  # roof top (ridge or flat roof) above the ground at the footprint
    building_roofs: np.ndarray  # "flat", "gable", "hip" or "mansard"
    building_districts: np.ndarray  # the district each building belongs to
    road_centrelines: np.ndarray  # shapely LineStrings, reaching a little past the scene edge
    road_widths_m: np.ndarray  # across all traffic areas (carriageway, and parking bays and cycle paths where drawn)
    road_polygons: np.ndarray  # centreline buffered by half that width (flat caps), clipped to the scene
    water: np.ndarray  # shapely Polygons of ponds and canals
    water_interpolated: np.ndarray  # bool per water polygon: interpolated across from its banks, else nodata
    # bool (H, W): tree crowns and hedges where they are the top surface, over water too (style "suburban":
    # also under roofs, never over water)
    vegetation_mask: np.ndarray
    car_mask: np.ndarray  # bool (H, W): cars, vans and lorries
    tree_xy_m: np.ndarray  # (N, 2) trunk positions
    tree_heights_m: np.ndarray
    tree_crown_radii_m: np.ndarray
    tree_kinds: np.ndarray  # "street", "waterside", "park", "garden" or "tall"

    @property
    def size_px(self) -> int:
        return int(self.dsm.shape[0])

    @property
    def extent_m(self) -> float:
        return self.size_px * self.pixel_size_m

    @property
    def local_transform(self) -> Affine:
        """Pixel -> local metres, north-up."""
        return Affine(self.pixel_size_m, 0.0, 0.0, 0.0, -self.pixel_size_m, self.extent_m)


def check_size(size_px, pixel_size_m) -> None:
    if isinstance(size_px, bool) or not isinstance(size_px, (int, np.integer)) or size_px < MIN_SIZE_PX:
        raise DemsegError(f"size_px must be an integer of at least {MIN_SIZE_PX} pixels, got {size_px!r}")
    if isinstance(pixel_size_m, bool) or not isinstance(pixel_size_m, (int, float, np.number)) \
            or not (0 < pixel_size_m <= MAX_PIXEL_SIZE_M):
        raise DemsegError(f"pixel_size_m must be a number in (0, {MAX_PIXEL_SIZE_M:g}] metres, "
                          f"got {pixel_size_m!r}")
    if size_px * pixel_size_m < MIN_EXTENT_M:
        raise DemsegError(f"a scene of {size_px} px at {pixel_size_m:g} m is {size_px * pixel_size_m:g} m across; "
                          f"scenes need at least {MIN_EXTENT_M:g} m (size_px x pixel_size_m) to hold a street "
                          "and its buildings")
    needed = size_px * size_px * BYTES_PER_SCENE_PIXEL
    if needed > memory_bytes() // 2:
        largest = int((memory_bytes() // 2 // BYTES_PER_SCENE_PIXEL) ** 0.5)
        raise DemsegError(f"a scene of {size_px} x {size_px} px needs about {needed / 2**30:,.0f} GiB of memory to "
                          f"generate, more than this machine can hold: use a size_px of at most {largest}")


def check_seed(seed, name: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DemsegError(f"{name} must be a non-negative integer, got {seed!r}")


def check_style(style) -> None:
    if not isinstance(style, str) or style not in STYLES:
        raise DemsegError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


@dataclass
class _Cover:
    """What stands on the ground besides buildings, as heights above it, and the trees."""

    canopy: np.ndarray
    hedges: np.ndarray
    cars: np.ndarray
    trees: Trees

    def high_vegetation(self) -> np.ndarray:
        """Where crowns or hedges over HIGH_VEGETATION_M stand, and no vehicle over them."""
        vegetation = np.maximum(self.canopy, self.hedges)
        return (vegetation > HIGH_VEGETATION_M) & (vegetation >= self.cars)


def _cover(rng: np.random.Generator, layout: Layout, canvas: Canvas, traffic_mask: np.ndarray,
           clearance: dict[str, np.ndarray]) -> _Cover:
    """Heights above the ground of tree crowns, hedges and vehicles: rough crowns of every kind of tree in
    all styles but "suburban", which keeps the smooth crowns of generator version 1."""
    if layout.survey:
        trees = scene_trees(rng, layout, canvas, clearance)
        canopy = rough_canopy(rng, trees, canvas)
    else:
        trees = version_1_trees(rng, layout.roads, canvas, layout.density, clearance)
        canopy = dome_canopy(trees, canvas)
        canopy = np.where(canopy > 0, np.maximum(canopy + leafy_roughness(rng, canvas, 0.45), 0.5), 0.0)
    hedges = hedge_heights(rng, layout.roads, canvas, layout.theta)
    hedges *= (clearance["building"] > 1.0) & (clearance["road"] > 0.5)
    if layout.survey:
        hedges *= (layout.density < 0.8) & (clearance["water"] > 0.5)  # no field hedges downtown, none afloat
    hedges = np.where(hedges > 0, hedges + leafy_roughness(rng, canvas, 0.15), 0.0)
    cars = car_heights(rng, layout.roads, canvas) * traffic_mask
    if layout.vehicles:
        parked = canvas.rasterize(sorted(layout.vehicles, key=lambda vehicle: vehicle[1]), "float32")
        cars = np.maximum(cars, parked * (clearance["building"] > 0))
    return _Cover(canopy, hedges, cars, trees)


STREETS_NOISE_M = (0.01, 0.08)  # style "streets": from smoothed products to older surveys (others: 5-10 cm)
UNPAVED_TEXTURE_M = (0.01, 0.04)  # lawns and bare earth return the laser less evenly than asphalt and paving


def unpaved_texture(rng: np.random.Generator, surfaces: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Short-range unevenness (m) of unpaved ground (everything but traffic areas and sidewalks): ground
    returns from grass and earth scatter by a few centimetres, from asphalt and paving much less."""
    paved = np.isin(surfaces, list(SURFACE_CODES.values()))
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=canvas.shape), 1.0)
    noise *= rng.uniform(*UNPAVED_TEXTURE_M) / max(float(noise.std()), 1e-9)
    return np.where(paved, 0.0, noise)


def generate_scene(seed: int, size_px: int = 896, pixel_size_m: float = 0.5,
                   style: str = DEFAULT_STYLE) -> SynthScene:
    """Generate one synthetic city scene in memory (no I/O); the same seed and style give identical arrays."""
    check_seed(seed)
    check_size(size_px, pixel_size_m)
    check_style(style)
    rng = np.random.default_rng(seed)
    canvas = Canvas(int(size_px), float(pixel_size_m))
    layout = lay_out(rng, canvas) if style == "suburban" else lay_out_districts(rng, canvas, style)
    water_mask = canvas.rasterize([(pond, 1) for pond in layout.water], "uint8") > 0
    to_water_m = ndimage.distance_transform_edt(~water_mask) * canvas.pixel_size_m
    terrain = layout.relief.sample(canvas.xs_m(), canvas.ys_m())
    terrain = terrain - banks_m(rng, layout.banks, canvas, to_water_m)
    dtm, to_road_m, surfaces = road_ground(layout.relief, layout.roads, canvas, terrain)
    if style == "streets":
        dtm = dtm + unpaved_texture(rng, surfaces, canvas)
    road_mask = np.isin(surfaces, [SURFACE_CODES[name] for name in TRAFFIC_SURFACES])
    building_ids = canvas.rasterize([(b.footprint, i + 1) for i, b in enumerate(layout.buildings)], "int32")
    to_building_m = ndimage.distance_transform_edt(building_ids == 0) * canvas.pixel_size_m
    clearance = {"building": to_building_m, "water": to_water_m, "road": to_road_m}
    cover = _cover(rng, layout, canvas, road_mask, clearance)
    dsm = dtm + np.maximum(np.maximum(cover.canopy, cover.hedges), cover.cars) * (building_ids == 0)
    dsm = add_buildings(dsm, dtm, layout.buildings, building_ids, canvas)
    vegetation = (cover.canopy > 0) | (cover.hedges > 0)
    dropouts = np.zeros(canvas.shape, dtype=bool)
    if layout.survey:
        crowns_over_roofs = (building_ids > 0) & (cover.canopy > 0) & (dtm + cover.canopy > dsm)
        dsm = np.where(crowns_over_roofs, dtm + cover.canopy, dsm)
        vegetation &= (building_ids == 0) | crowns_over_roofs
        dsm, dropouts = lidar_survey(rng, dsm, canvas)
    else:  # version 1: crowns are cut at the water's edge
        vegetation &= ~water_mask
    dsm = dsm + rng.normal(0.0, rng.uniform(*(STREETS_NOISE_M if style == "streets" else (0.05, 0.1))),
                           size=canvas.shape)
    open_water = water_mask & ~vegetation  # crowns over the water return the laser
    interpolated = np.zeros(len(layout.water), dtype=bool)
    if layout.survey:
        interpolated, filled = interpolated_water(rng, layout.water, canvas)
        dsm, dtm = tin_filled(dsm, open_water & filled), tin_filled(dtm, water_mask & filled)
        open_water &= ~filled
    nodata_mask = open_water | dropouts
    labels = np.select([building_ids > 0, road_mask, vegetation & cover.high_vegetation()],
                       [BUILDING, ROAD, VEGETATION], 0).astype(np.uint8)
    labels[nodata_mask] = LABEL_NODATA
    surfaces = np.where((labels == ROAD) | ((labels == 0) & (surfaces == SURFACE_CODES["sidewalk"])), surfaces,
                        labels).astype(np.uint8)
    surveyed = (as_survey(dsm, nodata_mask), as_survey(dtm, nodata_mask))
    return _synth_scene(seed, style, layout, canvas, *surveyed, labels, surfaces, vegetation & ~nodata_mask,
                        (cover.cars > 0) & ~nodata_mask, cover.trees, interpolated)


def _synth_scene(seed: int, style: str, layout: Layout, canvas: Canvas, dsm: np.ndarray, dtm: np.ndarray,
                 labels: np.ndarray, surfaces: np.ndarray, vegetation_mask: np.ndarray, car_mask: np.ndarray, trees: Trees,
                 water_interpolated: np.ndarray) -> SynthScene:
    scene_box = box(0, 0, canvas.extent_m, canvas.extent_m)
    return SynthScene(
        seed=int(seed), pixel_size_m=canvas.pixel_size_m, style=style, districts=layout.districts,
        dsm=dsm, dtm=dtm, labels=labels, surfaces=surfaces,
        buildings=object_array([b.footprint for b in layout.buildings]),
        building_heights_m=np.array([b.height_m for b in layout.buildings], dtype=float),
        building_roofs=np.array([b.roof for b in layout.buildings], dtype=object),
        building_districts=np.array([b.district for b in layout.buildings], dtype=object),
        road_centrelines=object_array([road.line for road in layout.roads]),
        road_widths_m=np.array([road.traffic_width_m for road in layout.roads], dtype=float),
        road_polygons=object_array([road.traffic_polygon.intersection(scene_box) for road in layout.roads]),
        water=object_array(layout.water), water_interpolated=water_interpolated,
        vegetation_mask=vegetation_mask, car_mask=car_mask, tree_xy_m=trees.xy_m,
        tree_heights_m=trees.height_m, tree_crown_radii_m=trees.crown_radius_m, tree_kinds=trees.kind,
    )


def scene_seed(world_seed: int, index: int) -> int:
    """The seed of scene ``index`` of a world: independent streams for every (world seed, index)."""
    return int(np.random.SeedSequence([world_seed, index]).generate_state(1)[0])
