"""Where the engine, its Python packages and the bundled models are, seen from inside QGIS.

Two layouts: the installed zip (``sial_qgis_plugin/engine`` and ``sial_qgis_plugin/models``, see
tools/package.py) and a source checkout (``backend/`` and ``models/`` next to the plugin folder).

Nothing here imports torch: QGIS must start, and say clearly what is missing, even when the
deep-learning packages are absent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REQUIRED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "safetensors": "safetensors",
    "rasterio": "rasterio",
    "scipy": "scipy",  # the round guard's regions
    "skimage": "scikit-image",  # a round's superpixels (each click spread over its own)
}
"""Import name → pip name of every package the engine needs beyond QGIS's own."""


def private_packages_dir() -> Path:
    """A folder for packages installed by the plugin, per Python version (never system-wide)."""
    from qgis.core import QgsApplication

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return Path(QgsApplication.qgisSettingsDirPath()) / "sial_packages" / version


def add_paths() -> None:
    """Make the engine and the plugin's private packages importable.

    Installed from the zip, the engine is the plugin's own subpackage ``engine`` (its modules
    import it relatively) and nothing generic goes on ``sys.path``: a top-level ``backend`` would
    collide with any other plugin's. Only a source checkout, where the plugin folder sits next to
    ``backend/`` and imports it by that name, puts the checkout's root there. Never the plugin
    folder itself: its ``processing`` subpackage would shadow QGIS's.
    """
    checkout = PLUGIN_DIR.parent
    bundled = (PLUGIN_DIR / "engine" / "__init__.py").is_file()
    if not bundled and (checkout / "backend" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    private = private_packages_dir()
    if private.is_dir() and str(private) not in sys.path:
        sys.path.append(str(private))
    block_triton()


def block_triton() -> None:
    """Keep torch from loading triton inside QGIS.

    triton (torch's compiler for ``torch.compile``, installed with the CUDA build) carries its
    own LLVM, whose start-up code crashes a process that already holds Mesa's LLVM: QGIS on a
    Linux desktop with Mesa OpenGL (Intel or AMD graphics, or Xvfb). The engine never compiles
    with triton; with ``sys.modules["triton"] = None`` its import fails cleanly and torch treats
    it as absent.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]


def missing_packages() -> list[str]:
    """pip names of required packages that cannot be imported."""
    return [pip_name for module, pip_name in REQUIRED.items() if importlib.util.find_spec(module) is None]


@dataclass(frozen=True)
class BundledModel:
    name: str
    directory: Path
    description: str
    classes: list[str]


def models_directories() -> list[Path]:
    """The bundled models: inside the plugin when installed from the zip, next to it in a checkout."""
    return [d for d in (PLUGIN_DIR / "models", PLUGIN_DIR.parent / "models") if d.is_dir()]


def bundled_models() -> list[BundledModel]:
    """Bundles found in the models folders, named from their cards (read as JSON, no torch)."""
    models = []
    for folder in models_directories():
        for card in sorted(folder.glob("*/model.json")):
            try:
                data = json.loads(card.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            models.append(
                BundledModel(
                    name=str(data.get("name", card.parent.name)),
                    directory=card.parent,
                    description=str(data.get("description", "")),
                    classes=[c.get("name", "?") for c in data.get("classes", [])],
                )
            )
    return models


def gpu_description() -> str:
    """'NVIDIA … (n GiB)' when torch sees a GPU, else an empty string."""
    import torch

    if not torch.cuda.is_available():
        return ""
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
