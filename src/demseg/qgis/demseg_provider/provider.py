"""The 'demseg' group of the Processing toolbox."""

from qgis.core import QgsProcessingProvider

from .algorithms import PredictAlgorithm, RasterizeAlgorithm, TrainAlgorithm


class DemsegProvider(QgsProcessingProvider):
    def id(self):
        return "demseg"

    def name(self):
        return "demseg"

    def longName(self):  # noqa: N802
        return "demseg: buildings and roads from LiDAR elevation models"

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (RasterizeAlgorithm(), TrainAlgorithm(), PredictAlgorithm()):
            self.addAlgorithm(algorithm)
