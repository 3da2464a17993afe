"""The sparse training's scale augmentation and its two terms on unlabelled pixels: the moving
average's CutMix consistency and the colour affinity."""

import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.io.raster import RasterSource
from backend.learn.losses import colour_affinity, confident_consistency
from backend.learn.sparse_training import (
    IGNORE,
    SparseSettings,
    SparseTrainer,
    cutmix_masks,
    paste,
    unlabelled_ramp,
)
from backend.learn.superpixels import SparseLabels
from backend.model.bundle import create_bundle
from tests.helpers import make_card


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("augmentation-scene"), size=384, seed=3)


def test_scaled_crops_keep_every_label_and_change_their_spacing_within_the_range(scene):
    """A label a few pixels wide must not vanish when a crop is shrunk (a click is one pixel)."""
    labels = SparseLabels(
        np.array([190, 190, 190]),
        np.array([182, 190, 198]),
        np.array([1, 3, 4]),
        np.array([True, False, True]),
    )
    card = make_card()
    settings = SparseSettings(crop=64, seed=11, max_scale=1.33)
    trainer = SparseTrainer(create_bundle(card).network, card, torch.device("cpu"), settings)
    spacings = []
    with RasterSource(scene.image, card.input) as source:
        for _ in range(60):
            image, target, clicked, valid = trainer._crop(source, labels, 1)
            assert image.shape == (3 + card.n_classes, 64, 64) and target.shape == valid.shape == (64, 64)
            assert sorted(target[target != IGNORE].tolist()) == [1, 3, 4] and clicked.sum() == 2
            where = {int(target[r, c]): (r, c) for r, c in np.argwhere(target != IGNORE)}
            # 16 px apart on the raster, 8 from the centre: inside the crop whatever its jitter
            spacings.append(np.hypot(*np.subtract(where[1], where[4])) / 16)
    spacings = np.array(spacings)
    assert spacings.min() >= 1 / 1.33 - 0.07 and spacings.max() <= 1.33 + 0.07
    assert spacings.min() < 0.85 and spacings.max() > 1.15  # both ways, not only one


def test_without_the_scale_range_crops_are_read_at_their_own_size():
    card = make_card()
    trainer = SparseTrainer(create_bundle(card).network, card, torch.device("cpu"), SparseSettings(crop=64))
    assert all(trainer._side(64, 384, 384) == 64 for _ in range(20))
    scaled = SparseTrainer(
        create_bundle(card).network, card, torch.device("cpu"), SparseSettings(crop=64, max_scale=1.33)
    )
    sides = {scaled._side(64, 384, 384) for _ in range(200)}
    assert min(sides) >= 48 and max(sides) <= 86 and len(sides) > 10
    assert scaled._side(64, 70, 300) <= 70  # never more than the raster holds
    with pytest.raises(UserError, match="crop scale"):
        SparseSettings(max_scale=0.5).check()


def test_cutmix_pastes_the_previous_crop_into_a_box_of_a_fifth_to_a_half():
    masks = cutmix_masks(200, 64, np.random.default_rng(0))
    shares = masks.float().mean(dim=(1, 2, 3))
    assert shares.min() >= 0.18 and shares.max() <= 0.52
    batch = torch.arange(3.0)[:, None, None, None].expand(3, 2, 64, 64)
    pasted = paste(batch, masks[:3])
    for i in range(3):
        inside = masks[i, 0]
        assert (pasted[i][:, inside] == (i - 1) % 3).all() and (pasted[i][:, ~inside] == i).all()
    targets = paste(torch.arange(3)[:, None, None].expand(3, 64, 64), masks[:3])  # no band axis
    assert (targets[0][masks[0, 0]] == 2).all()


def test_the_consistency_term_follows_only_confident_teachers_and_averages_over_unlabelled_pixels():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 4.0  # the student says class 0 everywhere
    teacher = torch.full((1, 3, 2, 2), 1 / 3)
    unlabelled = torch.ones(1, 2, 2, dtype=torch.bool)
    assert confident_consistency(logits, teacher, unlabelled, 0.9) == 0  # an unsure teacher asks nothing
    teacher[0, :, 0, 0] = torch.tensor([0.0, 0.95, 0.05])  # one confident pixel: class 1
    one = confident_consistency(logits, teacher, unlabelled, 0.9)
    expected = torch.nn.functional.cross_entropy(logits[:, :, 0, 0], torch.tensor([1])) / 4
    assert torch.isclose(one, expected)
    unlabelled[0, 0, 0] = False  # a labelled pixel is the labels' business
    assert confident_consistency(logits, teacher, unlabelled, 0.9) == 0


def test_the_colour_affinity_asks_one_class_within_a_colour_and_nothing_across_an_edge():
    colours = torch.zeros(1, 3, 16, 16)
    colours[..., 8:] = 0.6  # two surfaces, the edge between columns 7 and 8
    valid = torch.ones(1, 16, 16, dtype=torch.bool)

    def prediction(edge_column: int) -> torch.Tensor:
        logits = torch.full((1, 2, 16, 16), -8.0)
        logits[0, 0, :, :edge_column], logits[0, 1, :, edge_column:] = 8.0, 8.0
        return logits

    along_the_edge = colour_affinity(prediction(8), colours, valid, 2, 0.04)
    across_a_surface = colour_affinity(prediction(5), colours, valid, 2, 0.04)
    assert along_the_edge < 1e-3 < across_a_surface
    valid[:, :, 3:7] = False  # the split inside the surface falls in nodata: no pairs span it
    assert colour_affinity(prediction(5), colours, valid, 2, 0.04) < 1e-3


def test_the_terms_on_unlabelled_pixels_wait_for_the_network_to_learn_something():
    assert unlabelled_ramp(0, 100) == unlabelled_ramp(20, 100) == 0.0
    assert unlabelled_ramp(30, 100) == pytest.approx(0.5) and unlabelled_ramp(60, 100) == 1.0
    with pytest.raises(UserError, match="moving average"):
        SparseSettings(consistency=1.0).check()
    with pytest.raises(UserError, match="negative"):
        SparseSettings(affinity=-1.0).check()


def test_the_terms_join_the_loss_only_once_the_ramp_starts_and_a_fit_with_both_runs(scene):
    labels = SparseLabels(
        np.array([100, 150, 200, 250]), np.array([100, 150, 200, 250]), np.arange(4), np.ones(4, bool)
    )
    card = make_card()

    def fit(**options) -> list[float]:
        settings = SparseSettings(steps=10, batch=2, crop=64, loss="ce", **options)
        trainer = SparseTrainer(create_bundle(card, seed=0).network, card, torch.device("cpu"), settings)
        with RasterSource(scene.image, card.input) as source:
            return trainer.fit([(source, labels)])

    plain, with_affinity = fit(), fit(affinity=1.0)
    assert with_affinity[:3] == plain[:3]  # the first fifth of the steps: the same crops, the same loss
    assert all(a != p for a, p in zip(with_affinity[3:], plain[3:], strict=True))
    both = fit(affinity=1.0, consistency=1.0, average=0.9, max_scale=1.33)
    assert len(both) == 10 and np.isfinite(both).all()
