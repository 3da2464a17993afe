"""Predicting many rasters, or one huge mosaic, on a Dask cluster (``predict-many``).

Dask is imported lazily, inside functions: ``python -m backend predict`` never pays for it.
"""
