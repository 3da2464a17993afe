"""Small builders shared by the tests: rasters, model bundles, CLI runs."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from backend.model.bundle import ModelBundle, create_bundle, save_bundle
from backend.model.card import ClassInfo, ModelCard, Tiling

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_MISSING = "../shared/data is absent (a fresh clone has none): real-imagery tests need it"
DUBAI_CLASSES = (
    ("building", "#3c1098"),
    ("land", "#8429f6"),
    ("road", "#6ec1e4"),
    ("vegetation", "#fedd3a"),
    ("water", "#e2a929"),
)
FAST_ENCODER = "timm-mobilenetv3_small_minimal_100"
UTM = Affine(0.5, 0.0, 300_000.0, 0.0, -0.5, 2_780_000.0)


def make_card(
    encoder: str = FAST_ENCODER, tile: int = 512, overlap: int = 128, bands: int = 3, **changes
) -> ModelCard:
    card = ModelCard(
        name=f"test-{encoder}",
        classes=tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(DUBAI_CLASSES)),
        encoder=encoder,
        tiling=Tiling(tile, overlap),
        provenance={"training": "none: freshly initialised for tests"},
    )
    if bands != 3:
        from backend.model.card import InputSpec, Normalization

        card = card.with_updates(
            input=InputSpec(
                bands=tuple(range(1, bands + 1)),
                band_names=tuple(f"b{i}" for i in range(bands)),
                normalization=Normalization(
                    min=(0.0,) * bands, max=(255.0,) * bands, mean=(0.5,) * bands, std=(0.25,) * bands
                ),
            )
        )
    return card.with_updates(**changes) if changes else card


def make_bundle(directory: Path, seed: int = 0, **card_options) -> ModelBundle:
    bundle = create_bundle(make_card(**card_options), seed=seed)
    save_bundle(bundle, directory, dtype="float32")
    return bundle


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32640",
    transform: Affine | None = UTM,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
    **options,
) -> Path:
    """Write ``data`` (bands × H × W); ``mask`` (True = valid) becomes an internal mask."""
    profile = (
        dict(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
            nodata=nodata,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
        )
        | options
    )
    if crs is not None:
        profile["crs"] = CRS.from_string(crs)
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
    return path


def random_image(height: int, width: int, bands: int = 3, seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, (bands, height, width), dtype=np.uint8)
    if dtype == "uint16":
        return rng.integers(0, 12000, (bands, height, width), dtype=np.uint16)
    return rng.random((bands, height, width), dtype=np.float32) * 0.6


def crop_shared(name: str, out: Path, row: int, col: int, height: int, width: int, **overrides) -> Path:
    """Copy a window of a shared raster (with its mask) to ``out``, optionally with a CRS."""
    from rasterio.windows import Window

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(SHARED_DATA / name) as src:
            window = Window(col, row, width, height)
            data = src.read(window=window)
            mask = src.dataset_mask(window=window) > 0
            transform = src.window_transform(window) if src.crs else None
            crs = src.crs.to_string() if src.crs else None
    options = {"crs": crs, "transform": transform, "mask": mask} | overrides
    return write_raster(out, data, **options)


def run_cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", "--quiet", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_band(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            return dataset.read(1)


def plain_probabilities(network, card, source, size=384):
    """Network softmax on the whole (small) raster without click channels."""
    image, _ = source.read_normalized(0, 0, size, size)
    import torch  # here, so the helpers stay importable where torch is not needed

    x = np.concatenate([image, np.zeros((card.n_classes, size, size), np.float32)])[None]
    with torch.inference_mode():
        return network.eval()(torch.from_numpy(x)).softmax(1)[0].numpy()


def run_on_small_disk(
    mount: Path, size_kb: int, command: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a shell ``command`` with a fresh ``size_kb`` tmpfs mounted at ``mount``, in a private
    mount namespace (root: ``unshare -m``; others: also a user namespace), so that nothing has to
    be unmounted afterwards and the disk is really full when it is. What the command leaves on
    that disk is gone when it ends: list it from within ``command``."""
    import os
    import shlex

    namespaces = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    script = f"mount -t tmpfs -o size={size_kb}k tmpfs {shlex.quote(str(mount))} && cd {REPO} && {command}"
    return subprocess.run(
        ["unshare", *namespaces, "sh", "-c", script], capture_output=True, text=True, timeout=timeout
    )


SIAL_CLASSES = [[name, colour] for name, colour in DUBAI_CLASSES]


def sial_parameters(scene, tmp_path: Path, **settings):
    """Two SIAL iterations of a small network on ``scene``, trained and scored on itself."""
    import json

    from backend.learn.training_config import TrainingConfig
    from backend.protocols.sial import SialParameters

    data = {
        "name": "sial-test",
        "classes": SIAL_CLASSES,
        "encoder": FAST_ENCODER,
        "train": [[str(scene.image), str(scene.labels)]],
        "validation": [[str(scene.image), str(scene.labels)]],
    }
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = TrainingConfig.load(tmp_path / "config.json")
    return SialParameters(config, tmp_path / "out", iterations=2, image_size=128, device="cpu", **settings)


def class_weighted_score(classes: np.ndarray, uncertainty: np.ndarray, window, n_classes: int) -> float:
    """The patch score written from scratch: the window's mean uncertainty, each pixel weighted by
    1 / (K · max(share of its class on the whole map, 1 %)), K the classes on the map."""
    valid = ~np.isnan(uncertainty)
    shares = np.bincount(classes[valid], minlength=n_classes) / valid.sum()
    weights = 1.0 / (np.count_nonzero(shares) * np.maximum(shares, 0.01))
    c, u, v = classes[window], uncertainty[window], valid[window]
    return float((u[v] * weights[c[v]]).sum() / v.sum())
