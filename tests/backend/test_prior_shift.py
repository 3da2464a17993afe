import numpy as np
import pytest
import torch

from backend.errors import Cancelled
from backend.io.raster import RasterSource
from backend.learn.prior_shift import (
    PriorShift,
    estimate_prior_shift,
    label_shares,
    sample_posteriors,
)
from backend.learn.superpixels import SparseLabels
from backend.model.bundle import create_bundle
from backend.progress import Monitor
from tests.helpers import make_card, random_image, write_raster


def test_label_shares_count_every_labelled_pixel_and_never_reach_zero():
    labels = [
        SparseLabels(np.zeros(6, int), np.arange(6), np.array([0, 0, 0, 0, 1, 1]), np.ones(6, bool)),
        SparseLabels(np.zeros(2, int), np.arange(2), np.array([1, 1]), np.ones(2, bool)),
    ]
    shares = label_shares(labels, 3)
    assert shares == pytest.approx(np.array([5, 5, 1]) / 11)  # one pseudo-count each


def test_the_correction_in_the_output_bias_is_bayes_rule_and_comes_out_again():
    card = make_card()
    network = create_bundle(card, seed=3).network.eval()
    x = torch.randn(1, card.in_channels, 64, 64)
    shift = PriorShift((0.4, 0.3, 0.1, 0.1, 0.1), (0.2, 0.5, 0.1, 0.15, 0.05))
    with torch.no_grad():
        before = network(x).softmax(dim=1)
        shift.apply(network)
        after = network(x).softmax(dim=1)
        shift.remove(network)
        restored = network(x).softmax(dim=1)
    ratio = torch.tensor(np.array(shift.estimated_shares) / np.array(shift.label_shares), dtype=torch.float32)
    expected = before * ratio[None, :, None, None]
    expected /= expected.sum(dim=1, keepdim=True)
    assert torch.allclose(after, expected, atol=1e-5)
    assert torch.allclose(restored, before, atol=1e-6)
    assert PriorShift.from_json(shift.to_json()) == shift


def test_the_posteriors_cover_the_valid_imagery_once_unless_capped(tmp_path):
    """Every fourth valid pixel of the whole raster, so the estimate is the same on every run;
    a cap on the windows read draws them by the seed."""
    valid = np.ones((100, 70), bool)
    valid[:, :20] = False  # a nodata strip
    path = write_raster(tmp_path / "scene.tif", random_image(100, 70), mask=valid)

    def top_rows_are_class_1(row: int, col: int, height: int, width: int) -> np.ndarray:
        top = (np.arange(row, row + height) < 40)[:, None] & np.ones((1, width), bool)
        return np.stack([~top, top]).astype(np.float32)

    with RasterSource(path, make_card().input) as source:
        posteriors = sample_posteriors([top_rows_are_class_1], [source], 400, 32, seed=0)
        # rows 0, 4, … 96 (25, of which 10 above row 40) × valid columns 20, 24, … 68 (13)
        assert posteriors.shape == (25 * 13, 2)
        assert posteriors.mean(axis=0) == pytest.approx([0.6, 0.4])
        capped = sample_posteriors([top_rows_are_class_1], [source], 3, 32, seed=5)
        assert 0 < len(capped) < len(posteriors)
        assert np.array_equal(capped, sample_posteriors([top_rows_are_class_1], [source], 3, 32, seed=5))


def test_the_estimate_reports_its_progress_and_can_be_cancelled(tmp_path):
    path = write_raster(tmp_path / "scene.tif", random_image(64, 96))
    reports: list[float] = []
    monitor = Monitor(lambda fraction, _: reports.append(fraction), lambda: len(reports) >= 3)

    def uniform(row: int, col: int, height: int, width: int) -> np.ndarray:
        return np.full((2, height, width), 0.5, np.float32)

    with RasterSource(path, make_card().input) as source, pytest.raises(Cancelled):
        sample_posteriors([uniform], [source], 400, 32, seed=0, monitor=monitor)  # 2 × 3 windows
    assert reports == pytest.approx([0, 1 / 6, 2 / 6])


def test_the_correction_moves_the_prior_to_the_posteriors_mean_over_the_imagery(tmp_path):
    """Part of the way, not EM's fixed point: a network whose posteriors are not calibrated is
    over-corrected by the full Bayes step (BENCHMARKS.md, SIAL set-up 6)."""
    path = write_raster(tmp_path / "scene.tif", random_image(64, 64))

    def leaning_to_class_1(row: int, col: int, height: int, width: int) -> np.ndarray:
        return np.stack([np.full((height, width), 0.3), np.full((height, width), 0.7)]).astype(np.float32)

    labels = [SparseLabels(np.zeros(9, int), np.arange(9), np.array([0] * 5 + [1] * 4), np.ones(9, bool))]
    with RasterSource(path, make_card().input) as source:
        shift = estimate_prior_shift(labels, [source], [leaning_to_class_1], 2, 32)
    assert shift.label_shares == pytest.approx((6 / 11, 5 / 11))  # one pseudo-count each
    assert shift.estimated_shares == pytest.approx((0.3, 0.7)) and shift.method == "mean posterior"
    assert shift.adjustment == pytest.approx(np.log(np.array([0.3, 0.7]) / np.array([6 / 11, 5 / 11])))
