"""GFM QGIS plugin entry point.

Runs inside QGIS's own Python: imports qgis and the standard library only, never the ML
stack, which lives in the `gfm` backend process.
"""

__version__ = "0.1.0"  # the same as metadata.txt and the bundled backend (the build checks)


def classFactory(iface):  # noqa: N802 (QGIS's required name)
    from .plugin import GfmPlugin

    return GfmPlugin(iface)
