"""A synthetic city world of LiDAR DEMs with building, road and vegetation labels, for tests, demos and
pre-training.

Each scene is built in metres in a local frame (x east, y north, origin at the scene's south-west
corner): smooth terrain, a street network cut into it (kerbs, sidewalks, embankments), buildings,
trees, hedges, cars and water. The DSM sees everything, the DTM only the bare earth, and the building
and road labels are burnt from the very polygons that are written as vectors.

A scene is made of districts, urban forms of the cities demseg is used on:

- ``suburban``: detached houses set back from a street grid, gardens, hedges, trees;
- ``canopy``: detached houses under tall trees whose crowns reach over roofs and streets (Washington DC);
- ``rowhouse``: terraces of narrow houses sharing walls, gables along the row, back gardens;
- ``perimeter``: 19th-century perimeter blocks, a continuous street front of units around a courtyard
  with annexes and trees, in some scenes a canal between quays (Amsterdam, Paris, Lyon);
- ``oldtown``: irregular blocks filled with lots round patios, between 3-6 m alleys (Seville);
- ``industrial``: large flat-roofed halls with rooftop units amid parking lots and lorries.

The ``style`` of a scene picks them: ``"mixed"`` (the default) draws a district per scene and often a
second one in a zone of it, ``"dense"`` does so among perimeter blocks, old towns and row houses, and a
district name gives that district alone. ``"suburban"`` reproduces generator version 1: its DSM, DTM,
masks and vectors are bit-identical, and its labels are version 1's with vegetation split from the
background. All other styles have what real DSMs show: dormers, chimneys, roof huts and rooftop units,
height steps between adjoining units, roof terraces, edges softened by the LiDAR footprint, sparse
dropouts without a return, and since generator version 3 trees as LiDAR sees them (rough crowns of
several forms, 3-30 m; street and canal-side rows whose crowns touch into ribbons; park groves on lawns;
crowns over roofs and water) and water that the survey either leaves without returns (nodata) or
interpolates across from its banks (flat and sloped TIN facets).

Labels: 0 background, 1 building, 2 road, 3 vegetation (trees and hedges over 1.5 m), 255 nodata
(codes from :data:`demseg.data.spec.LABEL_CODES`). A footprint is building and a carriageway is road
even under a crown; vegetation is where crowns or hedges are the top surface over anything else.

One module per element of the world, each needing only those above it:

- ``geometry``, ``canvas``: shapely helpers; the pixel grid, smooth random fields and terrain relief;
- ``roads``, ``water``: street plans and networks, the road cut into the ground; ponds, canals and banks;
- ``buildings``, ``vehicles``, ``blocks``: footprints placed along roads; cars, parking and lorries; the
  block fillers of the built-up districts;
- ``districts``, ``roofs``, ``layout``: district traits, mixes and maps; roof details and roof heights;
  everything placed in map space before rasterising;
- ``trees``, ``canopy``, ``vegetation``: where trees stand and how big they grow; their rough crowns;
  hedges and the smooth trees of version 1;
- ``survey``: what the LiDAR survey does to the surface; ``scene``: one scene in memory;
- ``preview``: PNG previews; ``world``: a world of scenes on disk with its dataset.yaml.
"""

from demseg.data.synth.districts import DEFAULT_STYLE, DISTRICTS, STYLES
from demseg.data.synth.preview import write_preview, write_style_sheet
from demseg.data.synth.scene import (
    BUILDING,
    HIGH_VEGETATION_M,
    LABEL_NODATA,
    MAX_PIXEL_SIZE_M,
    MIN_SIZE_PX,
    ROAD,
    VEGETATION,
    SynthScene,
    generate_scene,
    scene_seed,
)
from demseg.data.synth.world import (
    ELEVATION_NODATA,
    GENERATOR_VERSION,
    WORLD_CRS,
    generate_world,
    scene_grid,
    write_scene,
)

__all__ = ["BUILDING", "DEFAULT_STYLE", "DISTRICTS", "ELEVATION_NODATA", "GENERATOR_VERSION",
           "HIGH_VEGETATION_M", "LABEL_NODATA", "MAX_PIXEL_SIZE_M", "MIN_SIZE_PX", "ROAD", "STYLES",
           "VEGETATION", "WORLD_CRS", "SynthScene", "generate_scene", "generate_world", "scene_grid",
           "scene_seed", "write_preview", "write_scene", "write_style_sheet"]
