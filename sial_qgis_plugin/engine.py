"""Finding the engine from inside QGIS without ever letting an import error reach the user."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REQUIRED = ("torch", "segmentation_models_pytorch", "rasterio", "safetensors")


def _ensure_backend_on_path() -> None:
    """In a source checkout the engine sits next to the plugin folder; in the zip, inside it."""
    here = Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "backend" / "__init__.py").exists() and str(candidate) not in sys.path:
            sys.path.insert(0, str(candidate))
            return


def missing_packages() -> list[str]:
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def engine_status() -> str:
    missing = missing_packages()
    if missing:
        return f"missing Python packages: {', '.join(missing)}"
    _ensure_backend_on_path()
    import torch

    import backend

    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"engine {backend.__version__} ready on {device} (torch {torch.__version__})"
