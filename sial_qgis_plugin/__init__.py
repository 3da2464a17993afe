"""QGIS entry point. Everything that imports ``qgis`` lives in this package. The engine is
``backend`` in a source checkout and this package's ``engine`` in the installed zip (the zip's
copy of the plugin imports it relatively; see tools/package.py). It is imported lazily, so QGIS
starts even when torch is missing."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import SialPlugin

    return SialPlugin(iface)
