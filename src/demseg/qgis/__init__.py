"""demseg in QGIS: ``demseg qgis install`` puts the Processing provider into a QGIS profile.

The provider (``demseg_provider``, a QGIS plugin) runs this environment's ``demseg`` command, whose
path the install records beside the plugin, so QGIS's own Python needs neither PyTorch nor demseg.
After the install the toolbox has a 'demseg' group (rasterize, train, predict), and
``qgis_process run demseg:predict -- RUN=... DEM=... OUTPUT=...`` runs headless.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from demseg.errors import DemsegError
from demseg.io.folders import os_error_message

PLUGIN_NAME = "demseg_provider"
PLUGIN_SOURCE = Path(__file__).with_name(PLUGIN_NAME)


def default_plugins_dir() -> Path:
    """The plugins folder of QGIS's default profile for this user (Linux, macOS and Windows layouts)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "QGIS" / "QGIS3"
    return base / "profiles" / "default" / "python" / "plugins"


def qgis_process_command() -> str | None:
    """QGIS's headless runner: ``qgis_process.bin`` where Debian's wrapper passes it a flag 3.22 refuses."""
    for name in ("qgis_process.bin", "qgis_process"):
        found = shutil.which(name)
        if found:
            return found
    return None


def demseg_executable() -> str:
    """This environment's ``demseg`` command."""
    beside = Path(sys.executable).with_name("demseg.exe" if sys.platform == "win32" else "demseg")
    if beside.exists():
        return str(beside)
    found = shutil.which("demseg")
    if not found:
        raise DemsegError("cannot find this environment's demseg command to record for QGIS")
    return found


def install_plugin(plugins_dir: str | os.PathLike | None = None, enable: bool = True) -> tuple[Path, str]:
    """Copy the provider into ``plugins_dir`` (default: QGIS's default profile), record this demseg, enable it.

    Returns the plugin folder and what enabling said (or why it was not done). An earlier copy is
    replaced; the copy is made beside the target and renamed, so QGIS never sees half a plugin.
    """
    if plugins_dir is not None and not str(plugins_dir).strip():
        raise DemsegError("--plugins-dir is empty: give the QGIS plugins folder, or leave the flag out for the "
                          "default profile's")
    target_parent = Path(plugins_dir) if plugins_dir is not None else default_plugins_dir()
    target = target_parent / PLUGIN_NAME
    staging = target_parent / f".{PLUGIN_NAME}.installing"
    try:
        target_parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(PLUGIN_SOURCE, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (staging / "demseg_command.txt").write_text(demseg_executable() + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DemsegError(os_error_message(exc, f"the QGIS plugins folder {target_parent}")) from exc
    if not enable:
        return target, "not enabled (--no-enable): enable 'demseg' in QGIS's plugin manager"
    command = qgis_process_command()
    if command is None:
        return target, "qgis_process not found: enable 'demseg' in QGIS's plugin manager"
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    result = subprocess.run([command, "plugins", "enable", PLUGIN_NAME], capture_output=True, text=True, env=env,
                            check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise DemsegError(f"qgis_process could not enable the plugin: {lines[-1] if lines else result.returncode}")
    return target, f"enabled with {command}"
