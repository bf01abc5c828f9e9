"""The plugin object QGIS loads: it registers the provider (in the desktop and in qgis_process)."""

from qgis.core import QgsApplication

from .provider import DemsegProvider


class DemsegPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 - QGIS calls it by this name
        self.provider = DemsegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        if self.provider is None:
            self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
