"""The README's "your own LiDAR in five commands" runs as written, on a tiny synthetic point cloud.

The commands are read from README.md itself. Only what a tiny cloud needs is changed: the LAZ
files and folders are the test's, the tiles are 64 px (the scene is 192 m across), and training
is 2 steps on 4 tiles. Every flag the README gives is kept.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import laspy
import numpy as np
import pytest

from demseg.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE_M, DENSITY = 192.0, 4.0  # metres across, points per square metre
TINY = {"data": ["--tile-size-px", "64"],
        "train": ["--tile-size-px", "64", "--iters", "2", "--val-every", "2", "--val-tiles", "4", "--mix", "none"]}


def readme_block(heading: str) -> list[str]:
    """The shell commands of the first code block under ``heading``, continuation lines joined."""
    text = README.read_text().split(f"## {heading}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def write_city(path: Path, seed: int = 0) -> Path:
    """A flat town in RD New coordinates: ground, 8 x 8 box buildings, three round trees."""
    rng = np.random.default_rng(seed)
    n = int(SIZE_M * SIZE_M * DENSITY)
    x, y = rng.uniform(0, SIZE_M, n), rng.uniform(0, SIZE_M, n)
    z, cls = 1.0 + 0.01 * x, np.full(n, 2, np.uint8)
    for bx in range(8, int(SIZE_M), 24):
        for by in range(8, int(SIZE_M), 24):
            inside = (x > bx) & (x < bx + 12) & (y > by) & (y < by + 10)
            z[inside] += 6 + (bx + by) % 7
            cls[inside] = 6
    for tx, ty in [(28, 28), (52, 76), (76, 52)]:
        r = np.hypot(x - tx, y - ty)
        z[r < 3] += 8 - r[r < 3]
        cls[r < 3] = 5
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets, header.scales = [121000.0, 487000.0, 0.0], [0.01, 0.01, 0.01]
    las = laspy.LasData(header)
    las.x, las.y, las.z, las.classification = x + 121000.0, y + 487000.0, z, cls
    las.write(path)
    return path


def test_the_readmes_own_lidar_commands_run_as_written(tmp_path, monkeypatch):
    commands = readme_block("Your own LiDAR in five commands")
    assert len(commands) == 5
    laz = write_city(tmp_path / "ahn3.laz")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        words = shlex.split(command.replace("/tmp/rast_ams", str(tmp_path / "rast_ams")))
        if words[0] == "qgis":  # the last step opens the outputs: they must be there
            assert all((tmp_path / name).is_file() for name in words[1:]), words
            continue
        assert words[0] == ".venv/bin/demseg", command
        argv = [str(laz) if word.endswith("*.laz") else word for word in words[1:]]
        if argv[0] == "train":
            argv[argv.index("--train-tiles") + 1] = "4"
        argv += TINY.get(argv[0], []) + ["--quiet"] * (argv[0] != "data")
        assert main(argv) == 0, command
    assert (tmp_path / "RUN" / "model.safetensors").is_file()


@pytest.mark.parametrize("heading", ["Two commands"])
def test_the_readmes_two_commands_are_what_ci_runs(heading):
    text = README.read_text().split(f"## {heading}", 1)[1]
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)[:2]
    ci = (README.parent / ".ci" / "run").read_text()
    assert blocks[0].startswith("bash setup.sh && .venv/bin/demseg demo")
    assert blocks[1] in ci  # CI runs exactly the README's test command


def test_the_readmes_python_snippets_run_as_written(tmp_path, monkeypatch):
    text = README.read_text().split("## Python", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(snippets) == 3
    for name, seed in (("rast_ams", 0), ("other", 1)):  # the city trained on, and one it never saw
        laz = write_city(tmp_path / f"{name}.laz", seed)
        assert main(["rasterize", str(laz), "--pixel-size-m", "0.5", "--crs", "EPSG:28992", "--out",
                     str(tmp_path / name), "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    tiny = "train_tiles=4, tile_size_px=64, iters=2, val_every=2, val_tiles=4, mix=None"
    scope: dict = {}
    for code in snippets:
        code = code.replace("/tmp/rast_ams", str(tmp_path / "rast_ams")).replace("train_tiles=10", tiny)
        code = code.replace('"examples/france.yaml"', '"other/dataset.yaml"')
        exec(compile(code, "README.md", "exec"), scope)
    assert 0 <= scope["scores"]["iou"] <= 1
    assert all(Path(path).is_file() for path in scope["paths"].values() if isinstance(path, (str, Path)))
