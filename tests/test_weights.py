"""Specification of demseg.models.weights: every weight source loads faithfully, and nothing executes code."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from demseg.errors import DemsegError
from demseg.models import (
    init_sincos_position_embeddings,
    load_encoder,
    mae_config,
    ordered_noise,
    save_encoder,
)
from demseg.models.weights import sidecar_path


def small_config(**overrides) -> ViTMAEConfig:
    """Return a ViTMAE config small enough for unit tests (width 32, 2 blocks, 4x4 patches of 8 px)."""
    fields = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32, image_size=32, patch_size=8, num_channels=1, mask_ratio=0.0,
        layer_norm_eps=1e-6,
    )
    return ViTMAEConfig(**{**fields, **overrides})


def with_sincos(model):
    """Return ``model`` in eval mode after filling its sin-cos position embeddings."""
    torch.manual_seed(0)
    init_sincos_position_embeddings(model)
    return model.eval()


def encode(encoder: ViTMAEModel, x: torch.Tensor) -> torch.Tensor:
    """Return all hidden states of ``encoder`` for ``x``, unmasked and in patch order."""
    encoder.config.mask_ratio = 0.0
    num_patches = encoder.embeddings.patch_embeddings.num_patches
    with torch.no_grad():
        output = encoder(x, noise=ordered_noise(x.shape[0], num_patches), output_hidden_states=True)
    return torch.stack(output.hidden_states)


def to_official_names(encoder: ViTMAEModel) -> dict[str, torch.Tensor]:
    """Return the encoder's weights under the timm key names of an official MAE checkpoint."""
    hf = encoder.state_dict()
    official = {
        "cls_token": hf["embeddings.cls_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for block in range(encoder.config.num_hidden_layers):
        ours, theirs = f"layers.{block}", f"blocks.{block}"
        for kind in ("weight", "bias"):
            official[f"{theirs}.attn.qkv.{kind}"] = torch.cat(
                [hf[f"{ours}.attention.{name}.{kind}"] for name in ("q_proj", "k_proj", "v_proj")]
            )
            official[f"{theirs}.attn.proj.{kind}"] = hf[f"{ours}.attention.o_proj.{kind}"]
            official[f"{theirs}.norm1.{kind}"] = hf[f"{ours}.layernorm_before.{kind}"]
            official[f"{theirs}.norm2.{kind}"] = hf[f"{ours}.layernorm_after.{kind}"]
            official[f"{theirs}.mlp.fc1.{kind}"] = hf[f"{ours}.mlp.fc1.{kind}"]
            official[f"{theirs}.mlp.fc2.{kind}"] = hf[f"{ours}.mlp.fc2.{kind}"]
    return official


@pytest.fixture(scope="module")
def tiny_rgb_encoder() -> ViTMAEModel:
    """A random 3-channel encoder of the real "tiny" arch on 32 px images (2x2 patches of 16 px)."""
    return with_sincos(ViTMAEModel(mae_config("tiny", num_channels=3, image_size=32, mask_ratio=0.0)))


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory, tiny_rgb_encoder) -> Path:
    """An official-style MAE .pth: timm names under "model", decoder keys, and the training args."""
    official = to_official_names(tiny_rgb_encoder)
    official["decoder_embed.weight"] = torch.randn(128, 192)
    official["mask_token"] = torch.zeros(1, 1, 128)
    path = tmp_path_factory.mktemp("official") / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": official, "epoch": 399, "args": argparse.Namespace(mask_ratio=0.75)}, path)
    return path


# --- random ------------------------------------------------------------------------------------


def test_random_weights_have_sincos_positions_and_say_so():
    encoder, metadata = load_encoder("random", None, num_channels=2, image_size=32)
    assert metadata["source"] == "random" and metadata["arch"] == "tiny" and metadata["num_channels"] == 2
    assert encoder.embeddings.position_embeddings.any()


# --- Hugging Face folders and hub ids ----------------------------------------------------------


def test_huggingface_folder_loads_with_identical_outputs(tmp_path):
    original = with_sincos(ViTMAEModel(small_config()))
    original.save_pretrained(tmp_path)
    loaded, metadata = load_encoder(str(tmp_path), None, num_channels=1, image_size=32)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(encode(loaded, x), encode(original, x), atol=0, rtol=0)
    assert metadata["format"] == "huggingface" and metadata["arch"] == "custom"


def test_pretraining_folder_gives_its_encoder(tmp_path):
    pretraining = with_sincos(ViTMAEForPreTraining(small_config()))
    pretraining.save_pretrained(tmp_path)
    loaded, metadata = load_encoder(str(tmp_path), None, num_channels=1, image_size=32)
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(encode(loaded, x), encode(pretraining.vit, x), atol=0, rtol=0)
    assert metadata["saved_as"] == "ViTMAEForPreTraining"


def test_unknown_hub_id_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DemsegError, match="demseg-test/no-such-model") as error:
        load_encoder("demseg-test/no-such-model", "base", num_channels=1)
    assert "\n" not in str(error.value)


def test_a_hub_id_with_the_hub_unreachable_is_one_line_without_retries(monkeypatch):
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on: the hub "host" refuses at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(DemsegError, match="unreachable") as error:
        load_encoder("demseg-test/no-such-model", "base", num_channels=1)
    assert "\n" not in str(error.value) and time.perf_counter() - started < 10


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(DemsegError, match="no config.json"):
        load_encoder(str(tmp_path), None, num_channels=1)


# --- official MAE checkpoints ------------------------------------------------------------------


def test_official_checkpoint_reproduces_the_encoder(official_checkpoint, tiny_rgb_encoder):
    loaded, metadata = load_encoder(str(official_checkpoint), None, num_channels=3, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encode(loaded, x), encode(tiny_rgb_encoder, x), atol=1e-5, rtol=1e-5)
    assert metadata["arch"] == "tiny" and metadata["format"] == "official-mae"


def test_rgb_checkpoint_on_grey_tiles_sees_the_tile_as_if_repeated_in_rgb(official_checkpoint, tiny_rgb_encoder):
    loaded, metadata = load_encoder(str(official_checkpoint), "tiny", num_channels=1, image_size=32)
    grey = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(
        encode(loaded, grey), encode(tiny_rgb_encoder, grey.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4
    )
    assert "summed" in metadata["channel_adaptation"]


def test_larger_tiles_get_the_sincos_table_of_the_larger_grid(official_checkpoint):
    loaded, metadata = load_encoder(str(official_checkpoint), None, num_channels=3, image_size=64)
    reference = ViTMAEModel(mae_config("tiny", num_channels=3, image_size=64))
    init_sincos_position_embeddings(reference)
    torch.testing.assert_close(loaded.embeddings.position_embeddings, reference.embeddings.position_embeddings)
    assert "resized" in metadata["position_embeddings"]


def test_official_checkpoint_of_another_arch_is_refused(official_checkpoint):
    with pytest.raises(DemsegError, match="holds a tiny encoder .*not base"):
        load_encoder(str(official_checkpoint), "base", num_channels=3, image_size=32)


class LeavesAMarker:
    """A pickle payload: unpickling it calls Path.touch on the marker path."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_needs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 4), "payload": LeavesAMarker(marker)}}, path)
    # the payload is live: unpickling the same object runs it (shown without ever loading untrusted files)
    pickle.loads(pickle.dumps(LeavesAMarker(marker)))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DemsegError, match="refusing .*evil.pth"):
        load_encoder(str(path), None, num_channels=1)
    assert not marker.exists()


# --- demseg's own safetensors ------------------------------------------------------------------


@pytest.fixture
def saved_encoder(tmp_path) -> tuple[ViTMAEModel, Path]:
    """A small encoder saved by save_encoder, and its path."""
    encoder = with_sincos(ViTMAEModel(small_config()))
    path = tmp_path / "encoder.safetensors"
    save_encoder(encoder, path, {"normalisation": "tile-minmax", "method": "mae"})
    return encoder, path


def test_safetensors_round_trip_with_sidecar(saved_encoder):
    encoder, path = saved_encoder
    assert sorted(item.name for item in path.parent.iterdir()) == ["encoder.json", "encoder.safetensors"]
    description = json.loads(sidecar_path(path).read_text())
    assert description["hidden_size"] == 32 and description["patch_size"] == 8
    loaded, metadata = load_encoder(str(path), None, num_channels=1, image_size=32)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(encode(loaded, x), encode(encoder, x), atol=0, rtol=0)
    assert metadata["normalisation"] == "tile-minmax" and metadata["arch"] == "custom"


def test_safetensors_header_describes_the_file_when_the_sidecar_is_lost(saved_encoder):
    encoder, path = saved_encoder
    sidecar_path(path).unlink()
    loaded, metadata = load_encoder(str(path), None, num_channels=1, image_size=32)
    assert metadata["normalisation"] == "tile-minmax"


def test_pretraining_state_dict_with_vit_prefix_loads(tmp_path, saved_encoder):
    pretraining = with_sincos(ViTMAEForPreTraining(small_config()))
    path = tmp_path / "pretrain.safetensors"
    save_file({key: value.contiguous() for key, value in pretraining.state_dict().items()}, str(path))
    sidecar_path(path).write_text(sidecar_path(saved_encoder[1]).read_text())
    loaded, _ = load_encoder(str(path), None, num_channels=1, image_size=32)
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(encode(loaded, x), encode(pretraining.vit, x), atol=0, rtol=0)


def test_wrong_arch_and_mismatched_shapes_are_refused(saved_encoder):
    _, path = saved_encoder
    with pytest.raises(DemsegError, match="holds a custom encoder .*not tiny"):
        load_encoder(str(path), "tiny", num_channels=1, image_size=32)
    with pytest.raises(DemsegError, match="made for 1 input channel"):
        load_encoder(str(path), None, num_channels=3, image_size=32)
    description = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**description, "hidden_size": 48, "intermediate_size": 96}))
    with pytest.raises(DemsegError, match="encoder.safetensors does not fit"):
        load_encoder(str(path), None, num_channels=1, image_size=32)


@pytest.mark.parametrize("change", ["drop_positions", "non_square_positions", "wrong_kernel", "wrong_block"])
@pytest.mark.parametrize("image_size", [32, 64])
def test_tensors_that_do_not_fit_a_valid_description_are_one_clear_error(saved_encoder, tmp_path, change, image_size):
    _, path = saved_encoder
    state = load_file(str(path))
    width = state["embeddings.position_embeddings"].shape[-1]
    if change == "drop_positions":
        state.pop("embeddings.position_embeddings")
    elif change == "non_square_positions":
        state["embeddings.position_embeddings"] = torch.zeros(1, 18, width)
    elif change == "wrong_kernel":
        state["embeddings.patch_embeddings.projection.weight"] = torch.zeros(width, 3, 3, 3)
    else:
        state["layers.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    hostile = tmp_path / "hostile.safetensors"
    save_file(state, str(hostile))
    sidecar_path(hostile).write_text(sidecar_path(path).read_text())
    with pytest.raises(DemsegError, match="does not fit") as error:
        load_encoder(str(hostile), None, num_channels=1, image_size=image_size)
    assert "\n" not in str(error.value)


def test_truncated_safetensors_is_refused(saved_encoder):
    _, path = saved_encoder
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DemsegError, match="corrupt or truncated"):
        load_encoder(str(path), None, num_channels=1, image_size=32)


def test_unknown_extension_and_missing_file_are_refused(tmp_path):
    weights = tmp_path / "encoder.onnx"
    weights.write_bytes(b"\0")
    with pytest.raises(DemsegError, match="unknown weights file type"):
        load_encoder(str(weights), None, num_channels=1)
    with pytest.raises(DemsegError, match="weights not found"):
        load_encoder(str(tmp_path / "gone.safetensors"), None, num_channels=1)


def test_every_shipped_model_matches_its_entry_and_is_accepted_as_init():
    from demseg.models.encoders import SHIPPED_MODELS, resolve_model_dir, shipped_model_names
    from demseg.runs.config import TrainConfig
    from demseg.runs.folder import read_run_config
    from demseg.train.run import resolve_init

    assert set(shipped_model_names()) == set(SHIPPED_MODELS)  # every entry is installed
    for name, entry in SHIPPED_MODELS.items():
        saved = read_run_config(resolve_model_dir(name))
        assert (saved.task, saved.model) == (entry.task, entry.model)
        config = TrainConfig(task=saved.task, model=saved.model, recipe=saved.recipe, head_width=saved.head_width,
                             neck_width=saved.neck_width, detail_width=saved.detail_width, unet_width=saved.unet_width,
                             auxiliary=saved.auxiliary, init=name)
        resolved = resolve_init(config)
        assert resolved.pixel_size_m == saved.pixel_size_m  # the data will be resampled to the start's pixels
        if entry.encoder:
            assert saved.backbone_weights == entry.encoder and resolved.backbone_weights == entry.encoder
