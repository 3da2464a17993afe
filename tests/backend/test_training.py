import json

import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.crops import CropSampler, LabelledImage, hue_rotation, style_randomise
from backend.learn.training import learning_rate_factor, train
from backend.learn.training_config import TrainingConfig
from backend.model.bundle import load_bundle


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("train-scene"), size=320, seed=11)


def config_for(scene, tmp_path, **changes) -> TrainingConfig:
    data = {
        "name": "tiny",
        "classes": [["building", "#3c1098"], ["land", "#8429f6"], ["road", "#6ec1e4"],
                    ["vegetation", "#fedd3a"], ["water", "#e2a929"]],
        "train": [[str(scene.image), str(scene.labels)]],
        "validation": [[str(scene.image), str(scene.labels)]],
        "encoder": "timm-mobilenetv3_small_minimal_100",
        "crop": 128, "batch_size": 2, "steps": 4, "validate_every": 2, "checkpoint_every": 2, "seed": 3,
    } | changes  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return TrainingConfig.load(path)


def test_crops_are_augmented_normalised_and_half_get_clicks(scene, tmp_path):
    config = config_for(scene, tmp_path, click_probability=0.5)
    image = LabelledImage.load(str(scene.image), str(scene.labels), [1, 2, 3], None)
    sampler = CropSampler([image], config, np.random.default_rng(0))
    x, y = sampler.batch(5)
    assert x.shape == (2, 8, 128, 128) and y.shape == (2, 128, 128)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert -3 < float(x[:, :3].mean()) < 3 and set(np.unique(y.numpy())) <= {0, 1, 2, 3, 4, 255}
    with_clicks = sum(bool(sampler.clicks(sampler.crop()[1])) for _ in range(200))
    assert 70 < with_clicks < 130
    labels = sampler.crop()[1]
    for click in sampler.clicks(labels) or []:
        assert labels[click.row, click.col] == click.class_id  # clicks carry the true class


def test_style_randomisation_turns_hue_keeps_grey_and_is_off_by_default(scene, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 32)).astype(np.float32) * 0.5 + 0.25
    plain = config_for(scene, tmp_path)
    assert np.array_equal(style_randomise(image, plain, rng), image)  # older configs train as before
    # a third of a turn about the grey axis swaps the bands round, brightness and greys kept
    assert np.allclose(hue_rotation(120) @ [0.9, 0.2, 0.1], [0.1, 0.9, 0.2], atol=1e-6)
    assert np.allclose(hue_rotation(37) @ [0.4, 0.4, 0.4], [0.4, 0.4, 0.4], atol=1e-6)
    styled = config_for(scene, tmp_path, hue_degrees=40, saturation=0.5, blur_sigma=1.5, noise_std=0.03)
    outputs = [style_randomise(image, styled, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0], outputs[2])
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
        assert abs(float(out.mean() - image.mean())) < 0.03 and not np.allclose(out, image, atol=0.01)


def test_a_models_card_says_which_pixel_sizes_its_zoomed_crops_covered(scene, tmp_path):
    assert config_for(scene, tmp_path).card().input.gsd_range_m is None  # no gsd_m: nothing to say
    assert config_for(scene, tmp_path, gsd_m=1.0, scale_range=[0.95, 1.05]).card().input.gsd_range_m is None
    zoomed = config_for(scene, tmp_path, gsd_m=1.0, scale_range=[0.25, 1.33])
    assert zoomed.card().input.gsd_range_m == (0.25, 1.33)
    # zoomed in twice (64 source pixels shown at 128), class edges come half as often along a row
    image = LabelledImage.load(str(scene.image), str(scene.labels), [1, 2, 3], None)
    edges = []
    for scale in (1.0, 0.5):
        config = config_for(scene, tmp_path, scale_range=[scale, scale], colour_jitter=0)
        sampler = CropSampler([image], config, np.random.default_rng(0))
        crops = [sampler.crop()[1].astype(int) for _ in range(40)]
        edges.append(np.mean([(np.diff(c, axis=1) != 0).mean() for c in crops]))
    assert 0.35 < edges[1] / edges[0] < 0.65


def test_learning_rate_warms_up_then_decays(scene, tmp_path):
    config = config_for(scene, tmp_path, steps=1000, warmup_steps=100)
    rates = [learning_rate_factor(s, config) for s in (0, 50, 99, 100, 550, 999)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0)
    assert rates[3] == pytest.approx(1.0) and rates[3] > rates[4] > rates[5] >= 0.01


def test_training_writes_a_bundle_with_provenance_and_resumes(scene, tmp_path):
    config = config_for(scene, tmp_path)
    bundle = train(config, tmp_path / "model", tmp_path / "work", "cpu", command="test")
    card = load_bundle(tmp_path / "model").card
    assert card.provenance["steps"] in (2, 4) and card.provenance["command"] == "test"
    assert card.provenance["validation"]["clicks"] == 0 and "miou" in card.provenance["validation"]
    assert [h["step"] for h in card.provenance["history"]] == [2, 4][: len(card.provenance["history"])]
    assert bundle.card.in_channels == 8
    config.steps = 6  # a longer run picks up from the checkpoint at step 4
    train(config, tmp_path / "model", tmp_path / "work", "cpu", command="test")
    checkpoint = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    assert json.loads(checkpoint["state"])["step"] == 6


def test_bad_configs_are_refused(scene, tmp_path):
    with pytest.raises(UserError, match="unknown setting"):
        config_for(scene, tmp_path, colour="red")
    with pytest.raises(UserError, match="not found"):
        config_for(scene, tmp_path, train=[["nowhere.tif", "nowhere.tif"]])
    with pytest.raises(UserError, match="multiple of 32"):
        config_for(scene, tmp_path, crop=100)
    with pytest.raises(UserError, match="scale_range must be two positive numbers"):
        config_for(scene, tmp_path, scale_range=[1.33, 0.25])
    with pytest.raises(UserError, match="blur_sigma must not be negative"):
        config_for(scene, tmp_path, blur_sigma=-1)


def test_a_binary_model_starts_from_a_land_cover_bundle(scene, tmp_path):
    source = config_for(scene, tmp_path)
    train(source, tmp_path / "landcover", tmp_path / "work", "cpu")
    binary = config_for(
        scene,
        tmp_path,
        name="buildings",
        classes=[["background", "#d9d9d9"], ["building", "#e31a1c"]],
        class_map={"0": 1, "1": 0, "2": 0, "3": 0, "4": 0},
        initialise_from=str(tmp_path / "landcover"),
    )
    from backend.learn.training import initialise_from_bundle
    from backend.model.network import build_network

    network = build_network(binary.card())
    initialise_from_bundle(network, binary.card(), tmp_path / "landcover")
    taught = {k: v.float() for k, v in load_bundle(tmp_path / "landcover").network.state_dict().items()}
    first = next(k for k, v in taught.items() if v.ndim == 4)  # the input convolution
    head, conv1 = network.state_dict()["segmentation_head.0.weight"], network.state_dict()[first]
    assert torch.equal(head[1], taught["segmentation_head.0.weight"][0])  # 'building' copies its row
    assert torch.allclose(head[0], taught["segmentation_head.0.weight"][1:].mean(0))  # the rest: the mean
    assert conv1.shape[1] == 3 + 2 and torch.equal(conv1[:, :3], taught[first][:, :3])
    assert torch.allclose(conv1[:, 4], taught[first][:, 3])  # building's click channel
    assert torch.allclose(conv1[:, 3], taught[first][:, 4:].mean(1))  # background's: the others' mean
    copied = [k for k in taught if k not in ("segmentation_head.0.weight", "segmentation_head.0.bias")]
    copied.remove(first)
    assert all(torch.equal(network.state_dict()[k].float(), taught[k]) for k in copied)


def test_initialising_from_a_missing_bundle_is_refused(scene, tmp_path):
    with pytest.raises(UserError, match="no model bundle"):
        config_for(scene, tmp_path, initialise_from=str(tmp_path / "nowhere"))
