"""An untrained bundle for the user's own classes (the start of a SIAL session)."""

import numpy as np
import pytest
import torch

from backend.errors import UserError
from backend.io.raster import RasterSource
from backend.learn.new_model import create_model_for_raster, data_bands, fresh_card, parse_classes
from backend.model.bundle import load_bundle
from tests.helpers import random_image, write_raster


def test_class_names_take_their_own_colour_or_the_palettes():
    classes = parse_classes(" crop:#00aa00 , fallow,, water ")
    assert [(c.index, c.name, c.color) for c in classes] == [
        (0, "crop", "#00aa00"),
        (1, "fallow", "#377eb8"),
        (2, "water", "#4daf4a"),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("water", "at least two"), ("water, water", "distinct"), ("a, :#ff0000", "non-empty")],
)
def test_class_lists_a_model_cannot_have_are_refused(text, reason):
    with pytest.raises(UserError, match=reason):
        parse_classes(text)


def test_a_bad_colour_is_one_clear_error():
    with pytest.raises(UserError, match="colour '#zz0000' is not #rrggbb"):
        fresh_card(parse_classes("a:#zz0000, b"), "m")


def test_a_new_model_reads_every_data_band_but_the_alpha_and_stretches_16_bit_imagery(tmp_path):
    """A 16-bit RGBA raster: the network gets the three colour bands (alpha is GDAL's mask),
    stretched by percentiles, and no click channels: SIAL's clicks are labels, not inputs."""
    image = random_image(96, 80, bands=4, dtype="uint16")
    path = write_raster(tmp_path / "rgba.tif", image, photometric="RGB", alpha="YES")
    assert data_bands(path) == (1, 2, 3)
    bundle = load_bundle(create_model_for_raster(path, parse_classes("a, b, c"), tmp_path / "fresh"))
    card = bundle.card
    assert card.input.bands == (1, 2, 3) and card.input.dtype == "uint16"
    assert card.input.normalization.method == "percentile"
    assert card.in_channels == 3 and not card.clicks.enabled and card.n_classes == 3
    with RasterSource(path, card.input) as source:
        image, _ = source.read_normalized(0, 0, 96, 80)
        assert np.isfinite(image).all() and -3 < image.mean() < 3  # stretched, not raw 0..12000
    with torch.no_grad():
        logits = bundle.network.eval()(torch.from_numpy(image[None, :, :64, :64]))
    assert logits.shape == (1, 3, 64, 64)


def test_a_four_band_raster_without_alpha_keeps_all_four(tmp_path):
    path = write_raster(tmp_path / "rgbn.tif", random_image(64, 64, bands=4), photometric="MINISBLACK")
    assert data_bands(path) == (1, 2, 3, 4)
    with pytest.raises(UserError, match="not found"):
        data_bands(tmp_path / "missing.tif")
