"""Rasterize, train and predict: each builds a demseg command line, runs it and reports its outputs.

A failure of the command (bad input, a missing file) becomes a QgsProcessingException carrying
demseg's one-line message, so the Processing dialog and qgis_process show that line.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

COMMAND_FILE = Path(__file__).with_name("demseg_command.txt")
TASKS = ["buildings", "roads"]


def demseg_command():
    """The demseg executable: $DEMSEG_EXE, else what `demseg qgis install` recorded, else `demseg` on the PATH."""
    if os.environ.get("DEMSEG_EXE"):
        return os.environ["DEMSEG_EXE"]
    if COMMAND_FILE.exists():
        recorded = COMMAND_FILE.read_text().strip()
        if recorded and Path(recorded).exists():
            return recorded
    found = shutil.which("demseg")
    if not found:
        raise QgsProcessingException("demseg is not installed where QGIS can find it: run `demseg qgis install` "
                                     "from demseg's environment, or set DEMSEG_EXE")
    return found


def run_demseg(arguments, feedback):
    """Run demseg with ``arguments``; its output goes to the log, its one-line error to the exception."""
    command = [demseg_command(), *[str(a) for a in arguments], "--quiet"]
    feedback.pushCommandInfo(" ".join(shlex.quote(part) for part in command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        feedback.pushInfo(line)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise QgsProcessingException(lines[-1] if lines else f"demseg exited with code {result.returncode}")
    return result.stdout


def extra_arguments(text):
    return shlex.split(text or "")


class _DemsegAlgorithm(QgsProcessingAlgorithm):
    def group(self):
        return ""

    def groupId(self):  # noqa: N802
        return ""

    def createInstance(self):  # noqa: N802
        return type(self)()

    def _extra(self, help_text):
        parameter = QgsProcessingParameterString("EXTRA", help_text, optional=True)
        parameter.setFlags(parameter.flags() | parameter.FlagAdvanced)
        self.addParameter(parameter)


class RasterizeAlgorithm(_DemsegAlgorithm):
    def name(self):
        return "rasterize"

    def displayName(self):  # noqa: N802
        return "Rasterize LiDAR point clouds (DSM, DTM, labels)"

    def shortHelpString(self):  # noqa: N802
        return ("Grids classified LAS/LAZ files into dsm.tif, dtm.tif, ndsm.tif and labels.tif (buildings from "
                "class 6) plus a dataset.yaml that Train reads: demseg rasterize.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", "LAS/LAZ point clouds", QgsProcessing.TypeFile))
        self.addParameter(QgsProcessingParameterNumber("PIXEL_SIZE", "Pixel size (m)",
                                                       QgsProcessingParameterNumber.Double, 0.5, minValue=0.05))
        self.addParameter(QgsProcessingParameterCrs("CRS", "CRS of files that declare none", optional=True))
        self._extra("More demseg rasterize flags, e.g. --classes buildings=6,roads=11")
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("DSM", "DSM"))
        self.addOutput(QgsProcessingOutputRasterLayer("DTM", "DTM"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        files = self.parameterAsFileList(parameters, "INPUT", context)
        if not files:
            raise QgsProcessingException("no point cloud given (INPUT)")
        out = self.parameterAsString(parameters, "OUTPUT", context)
        arguments = ["rasterize", *files, "--pixel-size-m", self.parameterAsDouble(parameters, "PIXEL_SIZE", context),
                     "--out", out]
        crs = self.parameterAsCrs(parameters, "CRS", context)
        if crs.isValid():
            arguments += ["--crs", crs.authid()]
        run_demseg(arguments + extra_arguments(self.parameterAsString(parameters, "EXTRA", context)), feedback)
        return {"OUTPUT": out, "DSM": str(Path(out) / "dsm.tif"), "DTM": str(Path(out) / "dtm.tif")}


class TrainAlgorithm(_DemsegAlgorithm):
    def name(self):
        return "train"

    def displayName(self):  # noqa: N802
        return "Train a model"

    def shortHelpString(self):  # noqa: N802
        return ("Trains a model on a dataset spec (YAML) or folder and writes a run folder that Predict uses: "
                "demseg train. Without options: the recommended recipe; 'The paper's model' gives the frozen "
                "MAE + UperNet.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("SPEC", "Dataset spec (dataset.yaml) or scene folder",
                                                     QgsProcessingParameterFile.File, fileFilter="YAML (*.yaml *.yml)"))
        self.addParameter(QgsProcessingParameterEnum("TASK", "Task", TASKS, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("TRAIN_TILES", "Training tiles",
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("ITERS", "Iterations", QgsProcessingParameterNumber.Integer,
                                                       300, minValue=1))
        self.addParameter(QgsProcessingParameterBoolean("PAPER", "The paper's model (frozen MAE + UperNet)", False))
        self._extra("More demseg train flags, e.g. --tile-size-px 128 --seed 1")
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Run folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsString(parameters, "OUTPUT", context)
        arguments = ["train", self.parameterAsFile(parameters, "SPEC", context),
                     "--task", TASKS[self.parameterAsEnum(parameters, "TASK", context)],
                     "--train-tiles", self.parameterAsInt(parameters, "TRAIN_TILES", context),
                     "--iters", self.parameterAsInt(parameters, "ITERS", context), "--out", out]
        if self.parameterAsBoolean(parameters, "PAPER", context):
            arguments.append("--paper")
        run_demseg(arguments + extra_arguments(self.parameterAsString(parameters, "EXTRA", context)), feedback)
        return {"OUTPUT": out}


class PredictAlgorithm(_DemsegAlgorithm):
    def name(self):
        return "predict"

    def displayName(self):  # noqa: N802
        return "Predict buildings or roads"

    def shortHelpString(self):  # noqa: N802
        return ("Runs a trained run folder over a DEM (with its DTM where the run's recipe needs one) and writes a "
                "georeferenced mask, a probability raster and vectors (footprints or road graph): demseg predict.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("RUN", "Run folder (from Train)",
                                                     QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterRasterLayer("DEM", "DEM (DSM)"))
        self.addParameter(QgsProcessingParameterRasterLayer("DTM", "DTM", optional=True))
        self._extra("More demseg predict flags, e.g. --regularise --tta")
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("MASK", "Mask"))
        self.addOutput(QgsProcessingOutputRasterLayer("PROBABILITY", "Probability"))
        self.addOutput(QgsProcessingOutputVectorLayer("VECTORS", "Vectors"))
        self.addOutput(QgsProcessingOutputFolder("FOLDER", "Output folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        dem = self.parameterAsRasterLayer(parameters, "DEM", context)
        if dem is None:
            raise QgsProcessingException("the DEM layer could not be loaded (DEM)")
        dem_path = dem.source()
        out = self.parameterAsString(parameters, "OUTPUT", context)
        arguments = ["predict", self.parameterAsFile(parameters, "RUN", context), dem_path, "--out", out]
        dtm = self.parameterAsRasterLayer(parameters, "DTM", context)
        if dtm is not None:
            arguments += ["--dtm", dtm.source()]
        run_demseg(arguments + extra_arguments(self.parameterAsString(parameters, "EXTRA", context)), feedback)
        stem = Path(dem_path).stem
        return {"MASK": str(Path(out) / f"{stem}_mask.tif"), "PROBABILITY": str(Path(out) / f"{stem}_prob.tif"),
                "VECTORS": str(Path(out) / f"{stem}_vectors.gpkg"), "FOLDER": out, "OUTPUT": out}
