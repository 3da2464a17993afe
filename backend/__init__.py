"""The engine: interactive and active-learning segmentation of georeferenced rasters.

No QGIS imports here: the engine runs headless (CLI, benchmarks, tests) and inside QGIS alike.
"""

__version__ = "0.1.0"
