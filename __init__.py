"""QGIS entry point. Imports are lazy so that loading the package costs nothing."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin.main import SarFloodPlugin

    return SarFloodPlugin(iface)
