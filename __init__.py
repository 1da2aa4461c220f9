"""QGIS entry point. Imports are lazy so that loading the package costs nothing."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    import sys

    if sys.version_info < (3, 9):   # the plugin's own code and the backend's rasterio need it
        from .plugin.unsupported import UnsupportedPython

        return UnsupportedPython(iface, (3, 9))
    from .plugin.main import SarFloodPlugin

    return SarFloodPlugin(iface)
