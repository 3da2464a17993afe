"""QGIS entry point. Everything that imports ``qgis`` lives in this package; the engine is
``backend`` (imported lazily, so QGIS starts even when torch is missing)."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import SialPlugin

    return SialPlugin(iface)
