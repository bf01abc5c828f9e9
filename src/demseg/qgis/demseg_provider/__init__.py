"""demseg's QGIS Processing provider: rasterize, train and predict, run by the demseg command line.

QGIS's own Python has no PyTorch, so the algorithms never import demseg: they run the ``demseg``
executable that ``demseg qgis install`` wrote into ``demseg_command.txt`` (or ``$DEMSEG_EXE``,
or ``demseg`` on the PATH) and pass its one-line errors on to QGIS.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS calls
    from .plugin import DemsegPlugin

    return DemsegPlugin(iface)
