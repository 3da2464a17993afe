import json
from dataclasses import replace

import pytest
import torch

from backend.errors import UserError
from backend.model.bundle import create_bundle, load_bundle, read_card, save_bundle
from backend.model.card import ModelCard
from tests.helpers import make_card


def test_card_round_trips_through_json():
    card = make_card(encoder="resnet34")
    again = ModelCard.from_json(json.loads(json.dumps(card.to_json())))
    assert again == card
    assert again.in_channels == 3 + 5  # bands + one click channel per class


def test_a_cards_trained_pixel_sizes_round_trip_and_older_cards_keep_their_json():
    card = make_card()
    assert "gsd_range_m" not in card.to_json()["input"]  # no range: the JSON is as before it
    ranged = card.with_updates(input=replace(card.input, gsd_m=1.0, gsd_range_m=(0.25, 1.33)))
    data = json.loads(json.dumps(ranged.to_json()))
    assert data["input"]["gsd_range_m"] == [0.25, 1.33]
    assert ModelCard.from_json(data) == ranged
    for bad in ([0.5, 0.25], [0, 1.0], [1.5, 2.0], "far"):
        data["input"]["gsd_range_m"] = bad  # reversed, not positive, not holding gsd_m, not a pair
        with pytest.raises(UserError, match="gsd_range_m"):
            ModelCard.from_json(data)


def test_bundle_round_trip_keeps_weights_and_outputs(tmp_path):
    bundle = create_bundle(make_card(), seed=3)
    save_bundle(bundle, tmp_path / "m", dtype="float32")
    loaded = load_bundle(tmp_path / "m")
    x = torch.rand(1, loaded.card.in_channels, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.network(x), bundle.network.eval()(x))
    assert loaded.card.weights_sha256 and loaded.card.weights_dtype == "float32"


def test_float16_bundle_loads_as_float32_and_stays_close(tmp_path):
    bundle = create_bundle(make_card(), seed=3)
    save_bundle(bundle, tmp_path / "half", dtype="float16")
    loaded = load_bundle(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    x = torch.rand(1, loaded.card.in_channels, 64, 64)
    with torch.inference_mode():
        a, b = loaded.network(x).softmax(1), bundle.network.eval()(x).softmax(1)
    assert (a - b).abs().max() < 1e-2


def test_same_seed_gives_the_same_network_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_bundle(make_card(), seed=5)
    after = torch.rand(1)
    b = create_bundle(make_card(), seed=5)
    assert before == after
    for pa, pb in zip(a.network.parameters(), b.network.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_other_smp_architectures_are_selectable_by_the_card(tmp_path):
    card = make_card(architecture="Unet", encoder="resnet18")
    save_bundle(create_bundle(card), tmp_path / "unet", dtype="float16")
    loaded = load_bundle(tmp_path / "unet")
    assert type(loaded.network).__name__ == "Unet"


def test_saving_over_a_bundle_keeps_extra_files(tmp_path):
    bundle = create_bundle(make_card())
    save_bundle(bundle, tmp_path / "m")
    (tmp_path / "m" / "MODEL_CARD.md").write_text("# notes")
    save_bundle(load_bundle(tmp_path / "m"), tmp_path / "m")
    assert (tmp_path / "m" / "MODEL_CARD.md").read_text() == "# notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging left behind


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda d: (d / "model.json").unlink(), "not a model bundle"),
        (lambda d: (d / "model.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights file"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 100), "corrupt or was replaced"),
        (lambda d: _edit(d, lambda j: j.pop("classes")), "missing key 'classes'"),
        (lambda d: _edit(d, lambda j: j["classes"][0].update(color="red")), "is not #rrggbb"),
        (lambda d: _edit(d, lambda j: j["architecture"].update(name="NoSuchNet")), "cannot build"),
        (lambda d: _edit(d, lambda j: j["input"].update(bands=[1, 2, 3, 4])), "needs 4 values"),
        (lambda d: _edit(d, lambda j: _four_bands(j)), "do not fit"),
    ],
)
def test_broken_bundles_raise_one_clear_error(tmp_path, damage, message):
    save_bundle(create_bundle(make_card()), tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(UserError, match=message):
        load_bundle(tmp_path / "m")


def test_truncated_weights_without_hash_are_reported(tmp_path):
    save_bundle(create_bundle(make_card()), tmp_path / "m")
    _edit(tmp_path / "m", lambda j: j["weights"].update(sha256=""))
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_bundle(tmp_path / "m")


def test_missing_bundle_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_card(tmp_path / "nowhere")


def _edit(directory, change):
    path = directory / "model.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _four_bands(card_json):
    card_json["input"]["bands"] = [1, 2, 3, 4]
    card_json["input"]["normalization"].update(min=0, max=255, mean=0.5, std=0.25)
