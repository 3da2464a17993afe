"""A session's checkpoints: one weights file per retraining round, in ``<session>.checkpoints/``.

A checkpoint is written to a temporary name and renamed, so it is complete or absent; its SHA-256
is recorded with the round, and checked whenever the round's weights are loaded again. Rounds
older than the undo window are pruned (their rows say so first). Only files named like this
module's own (``round-NNNN.safetensors`` and its ``.tmp``) are ever removed from the folder.

A checkpoint holds the weights the map comes from and, where they differ, the round's own
weights that the next round continues from (``round/…``, :mod:`backend.learn.weight_average`),
so that Undo brings both back exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import UserError
from ..learn.weight_average import ROUND_PREFIX, State
from ..model.bundle import sha256_of
from ..system.diskspace import disk_full_error, is_disk_full
from .store import Iteration

KEEP_CHECKPOINTS = 10
"""Retraining rounds that can be undone; older checkpoints are deleted to bound disk use."""
CHECKPOINT_NAME = re.compile(r"^round-\d{4,}\.safetensors(\.tmp)?$")
"""The only files this program writes (and so may remove) in a session's checkpoints folder."""


def checkpoint_name(iteration: int) -> str:
    return f"round-{iteration:04d}.safetensors"


def checkpoint_problem(folder: Path, record: Iteration) -> str | None:
    """Why the round's weights cannot be used (missing, damaged), or None when they can."""
    if not record.checkpoint:
        return None
    path = folder / record.checkpoint
    if not path.is_file():
        return "is missing"
    if record.sha256 and sha256_of(path) != record.sha256:
        return "is damaged (its SHA-256 differs from the one recorded when it was written)"
    return None


def to_prune(records: Sequence[Iteration]) -> list[Iteration]:
    """Rounds older than the undo window whose checkpoints are still there."""
    return [r for r in records[: -(KEEP_CHECKPOINTS + 1)] if r.checkpoint and not r.pruned]


def remove_checkpoint(folder: Path, name: str) -> None:
    if CHECKPOINT_NAME.match(name):
        (folder / name).unlink(missing_ok=True)


def remove_orphans(folder: Path, records: Sequence[Iteration]) -> None:
    """Files a crash left behind: temporary writes and checkpoints no row refers to.

    Only a writer calls this (it holds the session's lock, so no other process is writing one).
    """
    if not folder.is_dir():
        return
    referenced = {r.checkpoint for r in records if r.checkpoint}
    for path in folder.iterdir():
        if CHECKPOINT_NAME.match(path.name) and path.name not in referenced and path.is_file():
            path.unlink()


def save_state(network: torch.nn.Module, path: Path, round_weights: State | None = None) -> None:
    """Weights (float32), and the round's own beside them if given, written atomically: a
    checkpoint file is either complete or absent."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    tensors = dict(network.state_dict())
    tensors.update({ROUND_PREFIX + k: v for k, v in (round_weights or {}).items()})
    try:
        path.parent.mkdir(exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(path.parent) from None
        raise


def load_state(network: torch.nn.Module, path: Path) -> State | None:
    """Weights from ``path`` into ``network``; returns the round's own weights stored beside
    them (None: none); one clear error if they are not this network's."""
    from safetensors.torch import load_file

    try:
        stored = load_file(str(path))
    except Exception as exc:
        raise UserError(f"cannot read weights {path}: {exc}") from None
    state = {k: v for k, v in stored.items() if not k.startswith(ROUND_PREFIX)}
    own = {k[len(ROUND_PREFIX) :]: v for k, v in stored.items() if k.startswith(ROUND_PREFIX)}
    expected = network.state_dict()
    wrong = _mismatches(expected, state) or (_mismatches(expected, own) if own else [])
    if wrong:
        raise UserError(f"the weights in {path} are not this session's model (first mismatch: {wrong[0]})")
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    if not own:
        return None
    return {k: v.to(expected[k].dtype) for k, v in own.items()}


def _mismatches(expected: State, state: State) -> list[str]:
    return sorted(set(expected) ^ set(state)) or [
        k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)
    ]
