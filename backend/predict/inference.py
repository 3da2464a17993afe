"""Whole-raster prediction and the incremental update after new clicks.

Data flows one way: raster windows → tiles (+ click channels) → network → blended probabilities
→ class map, uncertainty, patch scores → writers. Tiles are processed row by row while a strip
of rows, one tile high, accumulates the blend; rows no later tile can reach are finished and
written, so memory depends on the raster's width, never on its area.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..io.cache import TileCache
from ..io.clicks import Click, encode_clicks
from ..io.outputs import CLASS_NODATA, MapBlock, MapWriter
from ..io.raster import RasterSource
from ..io.tiling import Tile, TileGrid
from ..model.bundle import ModelBundle
from ..model.network import fold_batchnorm, inference_dtype
from ..progress import Monitor
from ..system.runtime import default_batch_size, describe_device, resolve_device, synchronize
from .blending import Accumulator
from .held_classes import without_classes
from .patch_scores import PatchScores
from .uncertainty import Acquisition, run_network

FINISH_ROWS = 128
FINISH_COLUMNS = 2048
"""Maps are finished in blocks of about this many rows × columns, so the temporary arrays of the
last step stay small whatever the raster's width."""
LONG_RUN_SECONDS = 60.0
"""A whole-raster prediction projected to take longer than this announces its duration."""


class Predictor:
    """A network on a device, ready to turn rasters (+ clicks) into maps."""

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device = "auto",
        acquisition: Acquisition | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        owns_network: bool = False,
        precision: str = "auto",
    ):
        """``owns_network``: the network is only for prediction here (no retraining will follow),
        so its BatchNorms may be folded into the convolutions for speed."""
        self.card = bundle.card
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.acquisition = acquisition or Acquisition(mc_rate=bundle.card.mc_dropout_rate)
        self.tile = tile or self.card.tiling.tile_size
        self.overlap = self.card.tiling.overlap if overlap is None else overlap
        self.batch_size = batch_size or default_batch_size(self.device)
        self.autocast = inference_dtype(self.device, precision)
        self.network = bundle.network.eval()
        if owns_network:
            fold_batchnorm(self.network)
            for parameter in self.network.parameters():
                parameter.requires_grad_(False)  # ODIN then differentiates the input alone
        self.network = self.network.to(self.device).to(memory_format=torch.channels_last)
        self.channels = self.card.n_classes + (1 if self.acquisition.per_tile else 0)
        self.keep_probabilities = False  # finished blocks also carry the blended probabilities
        self.held_classes: tuple[int, ...] = ()  # kept off the map after a round (:mod:`.held_classes`)
        self.confidnet = bundle.confidnet
        if self.acquisition.name == "confidnet":
            if self.confidnet is None:
                raise UserError(
                    f"model '{self.card.name}' has no ConfidNet head: train one with "
                    "`python -m backend confidnet MODEL --config CONFIG`"
                )
            self.confidnet = self.confidnet.to(self.device).to(memory_format=torch.channels_last).eval()

    @property
    def precision(self) -> str:
        """What the network computes in: bfloat16, float16 or float32."""
        return str(self.autocast or torch.float32).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        """What run.json says of the model and how it ran (one prediction, or one block of many)."""
        card = self.card
        return {
            "model": {"name": card.name, "version": card.version, "sha256": card.weights_sha256},
            "device": describe_device(self.device),
            "device_type": self.device.type,
            "acquisition": self.acquisition.name,
            "tile_size": self.tile,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "precision": self.precision,
        }

    # ------------------------------------------------------------------ tiles

    def read_batch(
        self, source: RasterSource, tiles: Sequence[Tile], clicks: Sequence[Click]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Network inputs of ``tiles`` (bands, then click channels) and their validity masks.

        The inputs are laid out B × T × T × channels: torch's channels-last format, so the
        network gets them without another copy.
        """
        inputs = np.zeros((len(tiles), self.tile, self.tile, self.card.in_channels), dtype=np.float32)
        valids = []
        for i, tile in enumerate(tiles):
            valids.append(
                self.read_input(source, clicks, tile.row, tile.col, self.tile, self.tile, inputs[i])
            )
        return inputs, valids

    def read_input(
        self,
        source: RasterSource,
        clicks: Sequence[Click],
        row: int,
        col: int,
        height: int,
        width: int,
        out: np.ndarray,
    ) -> np.ndarray:
        """One window's network input into ``out`` (h × w × channels, zeros); returns its validity."""
        bands, radius = self.card.n_bands, self.card.clicks.radius
        image, valid = source.read_normalized(row, col, height, width)
        out[:, :, :bands] = image.transpose(1, 2, 0)
        near = [
            c
            for c in clicks
            if row - radius < c.row < row + height + radius and col - radius < c.col < col + width + radius
        ]
        if self.card.clicks.enabled and near:
            channels = encode_clicks(near, row, col, height, width, self.card.n_classes, radius)
            out[:, :, bands:] = channels.transpose(1, 2, 0)
        return valid

    def forward(self, inputs: np.ndarray, seeds: Sequence[int], source: RasterSource) -> torch.Tensor:
        """Outputs (B × channels × h × w, float32) on the device, from :meth:`read_batch` inputs;
        ``seeds`` (a tile's index) fix each input's MC-dropout masks, so a tile predicts the same
        whichever pass computes it."""
        x = torch.from_numpy(inputs).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        step = None
        if self.acquisition.name == "odin":
            step = torch.as_tensor(
                self.acquisition.odin_epsilon * np.asarray(source.scaling.scale) * _range_of(source),
                dtype=torch.float32,
                device=self.device,
            )
        probabilities, extra = run_network(
            self.network,
            x,
            self.acquisition,
            seeds,
            self.card.n_bands,
            step,
            self.autocast,
            self.confidnet,
        )
        return probabilities if extra is None else torch.cat([probabilities, extra.float()], dim=1)

    def batches(
        self, source: RasterSource, tiles: Sequence[Tile], clicks: Sequence[Click]
    ) -> Iterator[tuple[list[Tile], np.ndarray, list[np.ndarray]]]:
        """Batches of (tiles, inputs, validity).

        On a GPU, or a CPU with a core to spare, the next batch is read in a background thread
        while the network runs. Otherwise reading in between is faster: a reader thread competing
        with torch's threads for the cores stalls every parallel region of the network.
        """
        groups = [list(tiles[i : i + self.batch_size]) for i in range(0, len(tiles), self.batch_size)]

        def read(group: list[Tile]) -> tuple[list[Tile], np.ndarray, list[np.ndarray]]:
            return (group, *self.read_batch(source, group, clicks))

        spare_core = (os.cpu_count() or 1) > torch.get_num_threads()
        if self.device.type == "cpu" and not spare_core:
            yield from map(read, groups)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-reader") as pool:
            pending: Future | None = pool.submit(read, groups[0]) if groups else None
            for i in range(len(groups)):
                assert pending is not None
                current = pending.result()
                pending = pool.submit(read, groups[i + 1]) if i + 1 < len(groups) else None
                yield current

    # ------------------------------------------------------------------ maps

    def finish(self, accumulator: Accumulator, rows: slice, cols: slice) -> MapBlock:
        """Blend, take the argmax and the uncertainty, and mask nodata, for a block of a region."""
        blended = accumulator.blended(rows, cols)
        n = self.card.n_classes
        probabilities = without_classes(blended[:n], self.held_classes)
        classes = probabilities.max(dim=0).indices.to(torch.uint8)  # 10× faster than argmax on CPU
        if self.acquisition.per_tile:
            uncertainty = blended[n].clamp(0.0, 1.0)
        else:
            uncertainty = self.acquisition.from_probabilities(probabilities)
        valid = accumulator.valid[rows, cols]
        classes_np = classes.cpu().numpy()
        uncertainty_np = uncertainty.float().cpu().numpy()
        classes_np[~valid] = CLASS_NODATA
        uncertainty_np[~valid] = np.nan
        row, col = accumulator.row0 + rows.start, accumulator.col0 + cols.start
        kept = probabilities.float().cpu().numpy() if self.keep_probabilities else None
        return MapBlock(row, col, classes_np, uncertainty_np, valid, kept)

    def predict_raster(
        self,
        source: RasterSource,
        clicks: Sequence[Click],
        writer: MapWriter,
        scores: PatchScores,
        cache: TileCache | None = None,
        monitor: Monitor | None = None,
    ) -> int:
        """Predict every tile and write the maps; returns the number of tiles computed."""
        monitor = monitor or Monitor()
        info = source.info
        grid = TileGrid(info.width, info.height, self.tile, self.overlap)
        weights = torch.from_numpy(grid.weights).to(self.device)
        # One tile high, sliding down; rows past a small raster's edge are never written.
        strip = Accumulator(0, 0, self.tile, info.width, self.channels, self.device)
        done, batches, measured_from = 0, 0, 0.0
        rows = grid.rows()
        for k, row_tiles in enumerate(rows):
            strip.shift_up(row_tiles[0].row - strip.row0)
            for tiles, inputs, valids in self.batches(source, row_tiles, clicks):
                monitor.check()
                outputs = self.forward(inputs, [t.index for t in tiles], source)
                for tile, values, valid in zip(tiles, outputs, valids, strict=True):
                    strip.add(tile, values, weights, valid)
                    if cache is not None:
                        cache.store(tile.index, values.cpu().numpy())
                batches += 1
                if batches == 1:  # the first batch warms up (allocations, kernels): time the second
                    measured_from = time.perf_counter()
                elif batches == 2:
                    _announce_duration(monitor, time.perf_counter() - measured_from, len(tiles), len(grid))
                done += len(tiles)
                monitor.report(done / len(grid), f"tile {done}/{len(grid)}")
            finished = (rows[k + 1][0].row if k + 1 < len(rows) else info.height) - strip.row0
            width = scores.size * max(1, FINISH_COLUMNS // scores.size)  # whole patches per block
            for top in range(0, finished, FINISH_ROWS):
                for left in range(0, info.width, width):
                    block = self.finish(
                        strip,
                        slice(top, min(top + FINISH_ROWS, finished)),
                        slice(left, min(left + width, info.width)),
                    )
                    writer.write(block)
                    scores.add(block)
        synchronize(self.device)
        return done


def _announce_duration(monitor: Monitor, seconds: float, measured: int, total: int) -> None:
    """Early in a run: how long the whole raster will take, when that is over a minute."""
    projected = seconds / measured * total
    if projected >= LONG_RUN_SECONDS:
        hours, minutes = divmod(round(projected / 60), 60)
        span = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
        monitor.notice(
            f"about {span} for {total} tiles ({seconds / measured:.2f} s per tile, measured on the second "
            "batch); "
            "it can be cancelled, and leaves nothing half-written"
        )


def _range_of(source: RasterSource) -> np.ndarray:
    """Raw-value span that maps to 0..1, per band (so ε = 1/255 means one 8-bit grey level)."""
    return 1.0 / (np.asarray(source.scaling.scale) * np.asarray(source.spec.normalization.std))
