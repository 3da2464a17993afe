"""Model bundles on disk: ``model.json`` (the card) + ``model.safetensors`` (the weights).

Loading never executes code from the bundle (safetensors, not pickles). Any bundle written here
loads back through :func:`load_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..system.diskspace import disk_full_error, is_disk_full
from ..system.ownership import staging_folder
from .card import FORMAT, ModelCard
from .network import build_network

CARD_FILE = "model.json"
CONFIDNET_FILE = "confidnet.safetensors"
"""The optional failure-prediction head's file in a bundle (see :mod:`backend.learn.confidnet`)."""
STAGING_PREFIX = ".sial-bundle-"


@dataclass
class ModelBundle:
    card: ModelCard
    network: nn.Module
    directory: Path | None = None
    confidnet: nn.Module | None = None  # optional failure-prediction head


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(directory: str | Path) -> ModelCard:
    """The card of the bundle in ``directory`` (or of the ``model.json`` given directly)."""
    path = Path(directory)
    card_path = path if path.name == CARD_FILE else path / CARD_FILE
    if not card_path.parent.exists():
        raise UserError(f"model bundle not found: {path}")
    if not card_path.is_file():
        raise UserError(f"{path} is not a model bundle (no {CARD_FILE} in it)")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{card_path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError(f"{card_path} is not a model card: its JSON is nested too deeply") from None
    return ModelCard.from_json(data, where=str(card_path))


def load_bundle(directory: str | Path, check_hash: bool = True) -> ModelBundle:
    """Card + network with its weights, in float32 and eval mode, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card = read_card(directory)
    bundle_dir = Path(directory)
    if bundle_dir.name == CARD_FILE:
        bundle_dir = bundle_dir.parent
    weights_path = bundle_dir / card.weights_file
    if not weights_path.is_file():
        raise UserError(f"model bundle {bundle_dir} has no weights file {card.weights_file}")
    if check_hash and card.weights_sha256 and sha256_of(weights_path) != card.weights_sha256:
        raise UserError(f"{weights_path} is corrupt or was replaced: its SHA-256 does not match model.json")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    with torch.device("meta"):  # no throwaway random initialisation, no second copy in memory
        network = build_network(card)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"weights in {weights_path} do not fit {card.architecture}/{card.encoder} with "
            f"{card.in_channels} input channels and {card.n_classes} classes "
            f"({len(missing)} tensors missing, {len(unexpected)} unexpected)"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"weights in {weights_path} do not fit the card: tensor {key} has shape "
                f"{tuple(tensor.shape)}, the architecture needs {tuple(expected[key].shape)}"
            )
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)
    network.eval()
    return ModelBundle(
        card=card, network=network, directory=bundle_dir, confidnet=_load_confidnet(card, bundle_dir, network)
    )


def _load_confidnet(card: ModelCard, bundle_dir: Path, network: nn.Module) -> nn.Module | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .network import ConfidNet, decoder_channels

    if not card.confidnet_file:
        return None
    path = bundle_dir / card.confidnet_file
    if not path.is_file() or (card.confidnet_sha256 and sha256_of(path) != card.confidnet_sha256):
        raise UserError(f"the ConfidNet head {path} is missing or corrupt")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file: {exc}") from None
    head = ConfidNet(decoder_channels(network))
    try:
        head.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise UserError(f"the ConfidNet head in {path} does not fit the network: {exc}") from None
    return head.eval()


def create_bundle(card: ModelCard, seed: int = 0) -> ModelBundle:
    """A freshly initialised network (fixed seed) for ``card``: a start for training or tests."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        network = build_network(card).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    return ModelBundle(card=card, network=network)


def save_bundle(bundle: ModelBundle, directory: str | Path, dtype: str | None = None) -> Path:
    """Write the bundle; returns the folder it is in (see :func:`bundle_folder`).

    A reader sees the old bundle or the new one, never half: every file is complete before the
    first one is moved into place, and ``model.json`` goes last. Files in the folder that are
    not part of the bundle are never touched. ``dtype`` (``float16`` or ``float32``, default:
    the card's) applies to floating tensors.
    """
    from safetensors.torch import save_file

    dtype = dtype or bundle.card.weights_dtype
    if dtype not in ("float16", "float32"):
        raise UserError(f"weights dtype must be float16 or float32, not {dtype}")
    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    target = bundle_folder(directory, bundle.card.name)
    fresh = not target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_folder(target.parent if fresh else target, STAGING_PREFIX)
    except OSError as exc:
        raise UserError(f"cannot write the model bundle in {target}: {exc.strerror or exc}") from None
    try:
        state = {
            key: (value.to(torch_dtype) if value.is_floating_point() else value).contiguous().cpu()
            for key, value in bundle.network.state_dict().items()
        }
        weights_path = staging / bundle.card.weights_file
        save_file(state, str(weights_path))
        card = bundle.card.with_updates(weights_dtype=dtype, weights_sha256=sha256_of(weights_path))
        if bundle.confidnet is not None:
            head_path = staging / CONFIDNET_FILE
            save_file(
                {k: v.detach().float().contiguous().cpu() for k, v in bundle.confidnet.state_dict().items()},
                str(head_path),
            )
            card = card.with_updates(confidnet_file=CONFIDNET_FILE, confidnet_sha256=sha256_of(head_path))
        else:  # a card copied from a bundle with a head must not point at a file left behind
            card = card.with_updates(confidnet_file="", confidnet_sha256="")
        (staging / CARD_FILE).write_text(json.dumps(card.to_json(), indent=2) + "\n")
        keep = {CARD_FILE, card.weights_file, card.confidnet_file}
        _copy_extra_files(bundle.directory, staging, keep, target)
        _readable_by_all(staging)
        if fresh:
            os.replace(staging, target)
        else:
            for path in sorted(staging.iterdir(), key=lambda p: p.name == CARD_FILE):  # the card last
                os.replace(path, target / path.name)
            staging.rmdir()
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(target.parent if fresh else target) from None
        raise
    bundle.card = card
    bundle.directory = target
    return target


def is_bundle_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a model bundle of this format (so that it may be replaced)."""
    try:
        data = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def bundle_folder(directory: str | Path, name: str) -> Path:
    """Where a bundle asked for in ``directory`` goes, without ever replacing someone else's files.

    A new or empty folder, or one that holds a bundle (replaced), is used as it is. Into any
    other folder — one the user picked, with files of their own — the bundle goes into a new
    sub-folder named after the model; if that name is taken by something else, one clear error.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder: choose a folder for the model bundle")
    if not folder.exists() or is_bundle_folder(folder) or not any(folder.iterdir()):
        return folder
    inner = folder / (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model")
    if inner.exists() and not (inner.is_dir() and (is_bundle_folder(inner) or not any(inner.iterdir()))):
        raise UserError(
            f"{folder} holds other files, so the bundle would go into {inner.name}/ in it, but "
            f"{inner} exists and is not a model bundle: choose an empty or a new folder"
        )
    return inner


def _readable_by_all(folder: Path) -> None:
    """Usual permissions (the umask's) instead of the private ones a temporary folder gets, so a
    bundle installed for several users can be read by all of them."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _copy_extra_files(source: Path | None, staging: Path, keep: set[str], target: Path) -> None:
    """Carry the human-written files (MODEL_CARD.md, …) of a bundle into its new version, where
    the target folder has no file of that name yet (never over one)."""
    if source is None or not source.is_dir() or source.resolve() == target.resolve():
        return
    for path in source.iterdir():
        name = path.name
        if path.is_file() and name not in keep and not name.startswith(".") and not (target / name).exists():
            shutil.copy2(path, staging / name)
