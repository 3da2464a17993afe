import json

import numpy as np
import pytest

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.io.clicks import Click
from backend.io.raster import RasterSource
from backend.learn.sparse_training import SparseSettings
from backend.learn.superpixels import ExpansionSettings, SparseLabels, expand_clicks, label_quality
from backend.predict.evaluation import LABEL_NODATA, read_labels
from backend.protocols.sial import DENSE_CENTRE_SPACING, dense_crop_centres, run_sial
from tests.helpers import SIAL_CLASSES, make_card, plain_probabilities, sial_parameters


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("sial-scene"), size=384, seed=12)


def test_superpixel_expansion_adds_mostly_right_labels_and_never_enters_nodata(scene):
    truth = read_labels(scene.labels)
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(truth != 255)
    picks = rng.choice(len(rows), 30, replace=False)
    clicks = [Click(int(rows[i]), int(cols[i]), int(truth[rows[i], cols[i]])) for i in picks]
    with RasterSource(scene.image, make_card().input) as source:
        labels = expand_clicks(source, clicks, ExpansionSettings(window=64, segment_size=80, sieve=None))
        valid = source.read_valid(0, 0, 384, 384)
    quality = label_quality(labels, truth)
    assert quality["clicks"] == 30 and quality["added_pixels"] > 30 * 20
    assert quality["added_error_rate"] < 0.15 and quality["click_error_rate"] == 0.0
    assert valid[labels.rows, labels.cols].all()  # the masked corner stays unlabelled


def test_expansion_next_to_nodata_stays_out_of_it(scene):
    with RasterSource(scene.image, make_card().input) as source:
        valid = source.read_valid(0, 0, 384, 384)
        edge = np.argwhere(valid & ~np.roll(valid, -3, axis=1))[10]  # a valid pixel 3 px from the mask
        labels = expand_clicks(source, [Click(int(edge[0]), int(edge[1]), 1)], ExpansionSettings(sieve=None))
    assert valid[labels.rows, labels.cols].all() and len(labels) > 1


def test_the_sieve_drops_pixels_the_model_confidently_disputes(scene):
    click = Click(200, 200, 2)

    def sure_of_class_zero_above(row, col, height, width):
        p = np.zeros((5, height, width), np.float32)
        p[0, : height // 2] = 0.95  # the upper half: "building", confidently
        p[2, height // 2 :] = 1.0  # the lower half agrees with the click
        return p

    with RasterSource(scene.image, make_card().input) as source:
        kept = expand_clicks(source, [click], ExpansionSettings(sieve=None))
        sieved = expand_clicks(source, [click], ExpansionSettings(sieve=0.8), sure_of_class_zero_above)
    assert 1 <= len(sieved) < len(kept)
    assert (200, 200) in set(zip(sieved.rows.tolist(), sieved.cols.tolist(), strict=True))  # the click stays


def test_the_sial_protocol_learns_from_clicks_alone(scene, tmp_path):
    params = sial_parameters(scene, tmp_path, training=SparseSettings(steps=30, batch=4, crop=64))
    result = run_sial(params)
    first, second = result["iterations"]
    truth = read_labels(scene.labels)
    images = [truth[r : r + 128, c : c + 128] for r in range(0, 384, 128) for c in range(0, 384, 128)]
    present = sum(len(np.setdiff1d(image, [LABEL_NODATA])) for image in images)  # one click for each
    assert result["first_clicks"] == "regions" and first["clicks"] == present
    assert first["clicks"] < second["clicks"] <= 2 * 9 * 5  # ≤ one click per class, image and iteration
    assert second["clicked_fraction_percent"] < 1.0 and second["added_pixels"] == 0
    assert second["validation_miou"] > 0 and (tmp_path / "out" / "model" / "model.json").is_file()
    written = json.loads((tmp_path / "out" / "sial.json").read_text())
    assert written["complete"] and written["iterations"] == result["iterations"]


def test_the_sial_protocol_with_more_clicks_per_class_and_sieved_superpixels(scene, tmp_path):
    params = sial_parameters(
        scene,
        tmp_path,
        clicks_per_class=3,
        from_scratch=True,
        training=SparseSettings(steps=10, batch=4, crop=64, average=0.9),
        expansion=ExpansionSettings(window=48, segment_size=60, sieve=0.8),
    )
    result = run_sial(params)
    first, second = result["iterations"]
    assert result["from_scratch"] and result["training"]["average"] == 0.9
    assert 9 * 5 < second["clicks"] <= 2 * 9 * 5 * 3  # more than one click per class and image
    assert 0 < first["added_pixels"] < second["added_pixels"]
    assert 0 <= second["added_error_rate"] < 0.5


def test_the_first_clicks_before_any_model_do_not_depend_on_the_seed(scene, tmp_path):
    """The untrained network's output is an accident of its initial weights; the first clicks
    should not be, or every seed of a run trains on different labels."""

    def first_iteration(seed: int, first_clicks: str) -> dict:
        folder = tmp_path / f"{first_clicks}-{seed}"
        folder.mkdir()
        params = sial_parameters(
            scene,
            folder,
            seed=seed,
            first_clicks=first_clicks,
            clicks_per_class=3,
            training=SparseSettings(steps=1, batch=2, crop=64),
            expansion=ExpansionSettings(window=48, segment_size=60),
        )
        params.iterations = 1
        return run_sial(params)["iterations"][0]

    zero, one = first_iteration(0, "regions"), first_iteration(1, "regions")
    assert (zero["clicks"], zero["added_pixels"]) == (one["clicks"], one["added_pixels"])
    untrained = first_iteration(0, "untrained")  # clicks only where the untrained network is wrong
    assert (untrained["clicks"], untrained["added_pixels"]) != (zero["clicks"], zero["added_pixels"])


def test_sparse_labels_from_clicks():
    labels = SparseLabels.from_clicks([Click(1, 2, 3), Click(4, 5, 0)])
    assert labels.rows.tolist() == [1, 4] and labels.classes.tolist() == [3, 0] and labels.clicked.all()


def test_fine_tuning_on_few_labels_keeps_batchnorm_and_stays_near_the_start_with_an_anchor(scene, fast_model):
    import copy

    import torch

    from backend.learn.sparse_training import SparseTrainer
    from backend.model.bundle import load_bundle

    bundle = load_bundle(fast_model)
    labels = SparseLabels.from_clicks([Click(60, 60, 0), Click(300, 200, 4), Click(200, 320, 2)])
    with RasterSource(scene.image, bundle.card.input) as source:
        initial = plain_probabilities(bundle.network, bundle.card, source)
        changes, running = {}, {}
        for weight in (0.0, 5.0):
            network = copy.deepcopy(bundle.network)
            settings = SparseSettings(
                steps=8,
                crop=128,
                batch=4,
                learning_rate=3e-3,
                loss="ce",
                freeze_batchnorm=True,
                anchor_weight=weight,
            )
            SparseTrainer(network, bundle.card, torch.device("cpu"), settings).fit([(source, labels)])
            running[weight] = [v for k, v in network.state_dict().items() if "running_mean" in k]
            changes[weight] = np.abs(plain_probabilities(network, bundle.card, source) - initial).mean()
    original = [v for k, v in bundle.network.state_dict().items() if "running_mean" in k]
    assert all(torch.equal(a, b) for a, b in zip(running[5.0], original, strict=True))
    assert changes[5.0] < changes[0.0]


def _labelled(labels):
    return dict(
        zip(
            zip(labels.rows.tolist(), labels.cols.tolist(), strict=True), labels.classes.tolist(), strict=True
        )
    )


def test_pixels_two_classes_claim_stay_unlabelled_and_the_cache_changes_nothing(scene):
    settings = ExpansionSettings(sieve=None)
    first, second = Click(200, 200, 2), Click(201, 201, 3)
    with RasterSource(scene.image, make_card().input) as source:
        own_first = _labelled(expand_clicks(source, [first], settings))
        own_second = _labelled(expand_clicks(source, [second], settings))
        cache = {}
        both = _labelled(expand_clicks(source, [first, second], settings, cache=cache))
        again = _labelled(expand_clicks(source, [first, second], settings, cache=cache))
    assert set(cache) == {(200, 200), (201, 201)} and again == both
    shared = set(own_first) & set(own_second)
    assert len(shared) > 10  # the two superpixels overlap...
    expected = {p: c for p, c in {**own_first, **own_second}.items() if p not in shared}
    expected.update({(200, 200): 2, (201, 201): 3})  # ...and only the clicks survive there
    assert both == expected


def test_the_weight_average_follows_the_steps_with_a_ramped_decay():
    import torch

    from backend.learn.sparse_training import _moving_average

    layer = torch.nn.BatchNorm1d(1)
    average = _moving_average(layer, decay=0.5)
    expected = None
    for step, value in enumerate([4.0, 8.0, 16.0, 32.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
            layer.running_mean.fill_(-value)
        average.update_parameters(layer)
        keep = min(0.5, (1 + step) / (10 + step))  # step = how many updates came before
        expected = value if expected is None else keep * expected + (1 - keep) * value
        assert average.module.weight.item() == pytest.approx(expected)
        assert average.module.running_mean.item() == pytest.approx(-expected)  # BatchNorm statistics too
    assert 8.0 < expected < 32.0


def test_training_crops_mark_the_clicked_pixels_where_the_click_classes_are(scene):
    import torch

    from backend.learn.sparse_training import IGNORE, SparseTrainer
    from backend.model.bundle import create_bundle

    labels = SparseLabels(
        np.array([100, 101, 102, 110]),
        np.array([100, 100, 100, 110]),
        np.array([1, 1, 1, 4]),
        np.array([False, True, False, True]),
    )
    card = make_card()
    settings = SparseSettings(crop=128, seed=3)
    trainer = SparseTrainer(create_bundle(card).network, card, torch.device("cpu"), settings)
    with RasterSource(scene.image, card.input) as source:
        for index in range(len(labels)):
            _, target, clicked, _ = trainer._crop(source, labels, index)
            assert (target != IGNORE).sum() == 4 and clicked.sum() == 2  # every label, wherever it turned
            assert sorted(target[clicked].tolist()) == [1, 4]


def test_training_crops_fill_in_dense_targets_where_nothing_else_labels(scene):
    import torch

    from backend.learn.sparse_training import IGNORE, SparseTrainer
    from backend.model.bundle import create_bundle

    labels = SparseLabels(np.array([100]), np.array([100]), np.array([4]), np.array([True]))
    dense = np.full((384, 384), IGNORE, dtype=np.uint8)
    dense[:, :200] = 2  # the click's pixel too: the click wins there
    card = make_card()
    trainer = SparseTrainer(create_bundle(card).network, card, torch.device("cpu"), SparseSettings(crop=128))
    with RasterSource(scene.image, card.input) as source:
        _, target, clicked, _ = trainer._crop(source, labels, 0, dense)
    assert target[clicked].tolist() == [4]
    assert (target == 2).sum() == 128 * 128 - 1  # the crop lies within the densely labelled columns


def test_the_sial_protocol_with_the_prior_correction_reports_both_scores(scene, tmp_path):
    params = sial_parameters(
        scene, tmp_path, training=SparseSettings(steps=20, batch=4, crop=64, adjust_prior=True)
    )
    result = run_sial(params)
    truth = read_labels(scene.labels)
    known = truth[truth != 255]
    for iteration in result["iterations"]:
        prior = iteration["prior_shift"]
        assert prior["method"] in ("em", "mean posterior")
        assert sum(prior["label_shares"]) == pytest.approx(1) and sum(
            prior["estimated_shares"]
        ) == pytest.approx(1)
        assert prior["true_shares"] == pytest.approx(np.bincount(known, minlength=5) / known.size, abs=1e-5)
        assert 0 < prior["miou_before"] <= 100 and set(prior["per_class_iou_before"]) == {
            c for c, _ in SIAL_CLASSES
        }
    assert result["training"]["adjust_prior"] is True


def test_colour_jitter_changes_the_image_but_not_its_nodata_or_labels(scene, tmp_path):
    import rasterio
    import torch

    from backend.learn.sparse_training import IGNORE, SparseTrainer
    from backend.model.bundle import create_bundle

    holed = tmp_path / "holed.tif"
    with rasterio.open(scene.image) as src:
        profile, data = src.profile, src.read()
    profile.update(nodata=0)
    data[:, 90:110, :] = 0  # a nodata band across every crop below
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(data)
    labels = SparseLabels(
        np.array([100, 130]), np.array([100, 100]), np.array([1, 3]), np.array([True, True])
    )
    card = make_card()
    crops = {}
    for jitter in (0.0, 0.3):
        settings = SparseSettings(crop=64, seed=7, colour_jitter=jitter)
        trainer = SparseTrainer(create_bundle(card).network, card, torch.device("cpu"), settings)
        with RasterSource(holed, card.input) as source:
            crops[jitter] = trainer._crop(source, labels, 0)
    (plain, plain_target, _, _), (jittered, jittered_target, _, _) = crops[0.0], crops[0.3]
    nodata = np.all(plain[:3] == 0, axis=0)
    assert nodata.sum() >= 20 * 20 and np.all(jittered[:3, nodata] == 0)  # nodata stays the network's 0
    assert np.abs(jittered[:3, ~nodata] - plain[:3, ~nodata]).mean() > 0.05
    assert np.array_equal(plain_target, jittered_target) and (plain_target != IGNORE).sum() == 2
    with pytest.raises(Exception, match="colour jitter"):
        SparseSettings(colour_jitter=1.5).check()


def test_an_unknown_first_clicks_setting_is_one_clear_error(scene, tmp_path):
    params = sial_parameters(scene, tmp_path, first_clicks="random")
    with pytest.raises(UserError, match="regions, untrained"):
        run_sial(params)


def test_dense_labels_train_the_same_way_on_every_labelled_pixel_and_beat_clicks(scene, tmp_path):
    """The reference at the protocol's own budget: the same fit, every label read, no annotator."""
    truth = read_labels(scene.labels)
    centres = dense_crop_centres(truth, np.random.default_rng(0))
    labelled = int((truth != LABEL_NODATA).sum())
    assert len(centres) == labelled // DENSE_CENTRE_SPACING**2 and centres.clicked.all()
    assert (truth[centres.rows, centres.cols] == centres.classes).all()  # never on nodata

    def one_fit(dense: bool) -> dict:
        folder = tmp_path / ("dense" if dense else "clicks")
        folder.mkdir()
        training = SparseSettings(steps=120, batch=4, crop=64, loss="ce")
        params = sial_parameters(scene, folder, training=training)
        params.iterations, params.dense_labels = 1, dense
        return run_sial(params)

    dense, clicks = one_fit(True), one_fit(False)
    assert dense["dense_labels"] and dense["iterations"][0]["clicked_fraction_percent"] == 100.0
    assert dense["iterations"][0]["clicks"] == labelled
    assert dense["final_miou"] > clicks["final_miou"] + 8  # 24 against 5-9 on two seeds


def test_dense_labels_refuse_the_annotators_options(scene, tmp_path):
    params = sial_parameters(scene, tmp_path, expansion=ExpansionSettings(window=48, segment_size=60))
    params.iterations, params.dense_labels = 1, True
    with pytest.raises(UserError, match="one iteration, without superpixel"):
        run_sial(params)
