"""The QGIS Processing provider, run headless by QGIS's own `qgis_process` against this demseg.

`bash setup.sh --dev` (the README's test command, hence CI) installs Debian's qgis and records
that it did in `.venv/demseg-dev.json`; where it did, these tests run and are never skipped.
Elsewhere (no QGIS, no root to install it) they skip with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_lidar import scene_points, write_points

from demseg.cli import main
from demseg.data.synth import generate_world
from demseg.qgis import PLUGIN_NAME, install_plugin, qgis_process_command

DEV_RECORD = Path(__file__).resolve().parents[1] / ".venv" / "demseg-dev.json"
QGIS = qgis_process_command()


def _qgis_promised() -> bool:
    try:
        return bool(json.loads(DEV_RECORD.read_text()).get("qgis"))
    except (OSError, ValueError):
        return False


if QGIS is None:
    if _qgis_promised():
        raise RuntimeError("setup.sh --dev installed QGIS but qgis_process is not on the PATH")
    pytest.skip("QGIS is not installed (bash setup.sh --dev installs Debian's qgis where it can)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory):
    """A fresh user (HOME) whose QGIS profile has the provider installed and enabled."""
    home = tmp_path_factory.mktemp("home")
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "XDG_RUNTIME_DIR": str(runtime), "QT_QPA_PLATFORM": "offscreen"}
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_DATA_HOME")}
    os.environ.update({k: env[k] for k in saved})
    try:
        folder, enabled = install_plugin()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert folder == home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins" / PLUGIN_NAME
    assert "enabled" in enabled and (folder / "demseg_command.txt").exists()
    return env


def qgis_process(env, *arguments) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS, *map(str, arguments)], capture_output=True, text=True, env=env, timeout=600,
                          check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world") / "w", scenes=3, size_px=128, seed=4, progress=False)


TINY = "--model unet --unet-width 4 --tile-size-px 64 --val-tiles 2 --val-every 2"


def test_the_toolbox_lists_demsegs_algorithms(qgis_env):
    listed = qgis_process(qgis_env, "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("demseg:rasterize", "demseg:train", "demseg:predict"):
        assert name in listed.stdout


def test_train_then_predict_in_qgis_gives_the_masks_of_the_command_line(qgis_env, world, tmp_path):
    run = tmp_path / "run"
    trained = qgis_process(qgis_env, "run", "demseg:train", "--", f"SPEC={world}", "TASK=0", "TRAIN_TILES=2",
                           "ITERS=2", "PAPER=true", f"EXTRA={TINY}", f"OUTPUT={run}")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["iters"], config["train_tiles"]) == ("unet", 2, 2)
    dem, dtm = world.parent / "s000" / "dem.tif", world.parent / "s000" / "dtm.tif"
    predicted = qgis_process(qgis_env, "--json", "run", "demseg:predict", "--", f"RUN={run}", f"DEM={dem}",
                             f"DTM={dtm}", f"OUTPUT={tmp_path / 'qgis'}")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    results = json.loads(predicted.stdout[predicted.stdout.index("{"):])["results"]
    assert Path(results["MASK"]).exists() and Path(results["VECTORS"]).exists()
    assert main(["predict", str(run), str(dem), "--dtm", str(dtm), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    with rasterio.open(results["MASK"]) as a, rasterio.open(tmp_path / "cli" / "dem_mask.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.crs == b.crs and a.transform == b.transform


def test_rasterize_in_qgis_writes_the_dsm_and_dtm(qgis_env, tmp_path):
    laz = write_points(tmp_path / "tiny.laz", scene_points())
    out = tmp_path / "rasters"
    done = qgis_process(qgis_env, "run", "demseg:rasterize", "--", f"INPUT={laz}", "PIXEL_SIZE=1",
                        "EXTRA=--channels none", f"OUTPUT={out}")
    assert done.returncode == 0, done.stdout + done.stderr
    with rasterio.open(out / "dsm.tif") as dsm:
        assert dsm.res == (1.0, 1.0) and dsm.width == 20
    assert (out / "dataset.yaml").exists()


def test_a_missing_layer_or_a_bad_run_is_one_clear_line_and_a_failed_exit(qgis_env, world, tmp_path):
    missing = qgis_process(qgis_env, "run", "demseg:predict", "--", f"RUN={tmp_path}",
                           f"DEM={tmp_path / 'missing.tif'}", f"OUTPUT={tmp_path / 'out'}")
    assert missing.returncode != 0 and "DEM" in missing.stdout + missing.stderr
    not_a_run = qgis_process(qgis_env, "run", "demseg:predict", "--", f"RUN={tmp_path}",
                             f"DEM={world.parent / 's000' / 'dem.tif'}", f"OUTPUT={tmp_path / 'out2'}")
    text = not_a_run.stdout + not_a_run.stderr
    assert not_a_run.returncode != 0 and "demseg: error:" in text and "run" in text
    assert not list((tmp_path / "out2").glob("*_mask.tif"))
