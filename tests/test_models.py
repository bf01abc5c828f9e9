"""Specification of demseg.models: the frozen MAE backbone, the pyramid neck, UperNet, the UNet, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from demseg.errors import DemsegError
from demseg.models import (
    MODEL_NAMES,
    MODELS,
    MaeBackbone,
    MaeUperNet,
    ModelConfig,
    SegmentationHead,
    UNet,
    ViTPyramidNeck,
    build,
    build_backbone,
    init_sincos_position_embeddings,
    mae_config,
    ordered_noise,
    precision,
    resolve_dtype,
)

IMAGE_PX = 32
PATCH_PX = 8
GRID = IMAGE_PX // PATCH_PX


def small_config(num_layers: int = 4, **overrides) -> ViTMAEConfig:
    """Return a ViTMAE config small enough for unit tests (width 32, 4x4 patches)."""
    fields = dict(
        hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2, intermediate_size=64,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32, image_size=IMAGE_PX, patch_size=PATCH_PX, num_channels=1,
        mask_ratio=0.0, layer_norm_eps=1e-6,
    )
    return ViTMAEConfig(**{**fields, **overrides})


def small_encoder(seed: int = 0, **overrides) -> ViTMAEModel:
    """Return a sin-cos initialised random encoder of :func:`small_config`."""
    torch.manual_seed(seed)
    encoder = ViTMAEModel(small_config(**overrides))
    init_sincos_position_embeddings(encoder)
    return encoder.eval()


def official_2d_sincos(embed_dim: int, grid_size: int) -> np.ndarray:
    """Port of get_2d_sincos_pos_embed (facebookresearch/mae util/pos_embed.py), CLS row included."""

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


def with_patch_changed(x: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Return a copy of ``x`` with one patch raised by a large constant."""
    changed = x.clone()
    changed[..., row * PATCH_PX:(row + 1) * PATCH_PX, col * PATCH_PX:(col + 1) * PATCH_PX] += 10.0
    return changed


# --- position embeddings -----------------------------------------------------------------------


def test_transformers_leaves_fresh_position_embeddings_all_zero():
    """The behaviour init_sincos_position_embeddings exists for (transformers 5.x)."""
    torch.manual_seed(0)
    pretraining = ViTMAEForPreTraining(small_config())
    assert not pretraining.vit.embeddings.position_embeddings.any()
    assert not pretraining.decoder.decoder_pos_embed.any()
    assert not ViTMAEModel(small_config()).embeddings.position_embeddings.any()


def test_sincos_init_fills_encoder_and_decoder_with_the_mae_formula():
    pretraining = ViTMAEForPreTraining(small_config())
    init_sincos_position_embeddings(pretraining)
    encoder_table = pretraining.vit.embeddings.position_embeddings[0]
    decoder_table = pretraining.decoder.decoder_pos_embed[0]
    for table, width in ((encoder_table, 32), (decoder_table, 16)):
        assert table[1:].abs().sum() > 0
        assert not table[0].any()  # CLS row
        expected = torch.from_numpy(official_2d_sincos(width, GRID)).float()
        torch.testing.assert_close(table.detach(), expected, atol=1e-6, rtol=0)


# --- token order -------------------------------------------------------------------------------


def test_mask_ratio_zero_still_shuffles_tokens_without_ordered_noise():
    encoder = small_encoder()
    x = torch.randn(1, 1, IMAGE_PX, IMAGE_PX)
    torch.manual_seed(3)
    plain = encoder(x, output_hidden_states=True)
    torch.manual_seed(3)
    changed = encoder(with_patch_changed(x, 1, 2), output_hidden_states=True)
    assert not torch.equal(plain.ids_restore[0], torch.arange(GRID * GRID))
    moved_token = (changed.hidden_states[0] - plain.hidden_states[0]).norm(dim=-1)[0].argmax().item()
    assert moved_token != 1 + 1 * GRID + 2


def test_ordered_noise_keeps_tokens_in_patch_order():
    encoder = small_encoder()
    x = torch.randn(1, 1, IMAGE_PX, IMAGE_PX)
    noise = ordered_noise(1, GRID * GRID)
    plain = encoder(x, noise=noise, output_hidden_states=True)
    changed = encoder(with_patch_changed(x, 1, 2), noise=noise, output_hidden_states=True)
    assert torch.equal(plain.ids_restore[0], torch.arange(GRID * GRID))
    token_change = (changed.hidden_states[0] - plain.hidden_states[0]).norm(dim=-1)[0]
    assert token_change.nonzero().flatten().tolist() == [1 + 1 * GRID + 2]  # CLS is token 0


def test_backbone_map_changes_most_where_the_input_patch_changed():
    backbone = MaeBackbone(small_encoder(), tap_blocks=(0,), dtype=torch.float32)
    x = torch.randn(1, 1, IMAGE_PX, IMAGE_PX)
    change = (backbone(with_patch_changed(x, 2, 1))[0] - backbone(x)[0]).norm(dim=1)[0]
    assert divmod(change.argmax().item(), GRID) == (2, 1)


# --- the frozen backbone -----------------------------------------------------------------------


def test_backbone_returns_hidden_states_of_the_tapped_blocks():
    encoder = small_encoder()
    x = torch.randn(2, 1, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        hidden = encoder(x, noise=ordered_noise(2, GRID * GRID), output_hidden_states=True).hidden_states
    maps = MaeBackbone(encoder, tap_blocks=(0, 2, 3), dtype=torch.float32)(x)
    assert len(hidden) == 4 + 1  # embedding output, then one per block
    for block, feature in zip((0, 2, 3), maps, strict=True):
        expected = hidden[block + 1][:, 1:].transpose(1, 2).reshape(2, 32, GRID, GRID)
        torch.testing.assert_close(feature, expected)


def test_bf16_features_agree_with_fp32():
    x = torch.randn(2, 1, IMAGE_PX, IMAGE_PX)
    fp32 = MaeBackbone(small_encoder(), tap_blocks=(1, 3), dtype=torch.float32)(x)
    bf16 = MaeBackbone(small_encoder(), tap_blocks=(1, 3), dtype=torch.bfloat16)(x)
    for full, reduced in zip(fp32, bf16, strict=True):
        assert reduced.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(full.flatten(1), reduced.flatten(1), dim=1)
        assert cosine.min() > 0.999


def test_backbone_is_frozen_and_runs_in_inference_mode():
    backbone = MaeBackbone(small_encoder(), tap_blocks=(3,))
    seen = []
    backbone.encoder.layers[0].register_forward_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
    backbone.train()
    backbone(torch.randn(1, 1, IMAGE_PX, IMAGE_PX))
    assert seen == [True]
    assert not backbone.encoder.training
    assert not any(parameter.requires_grad for parameter in backbone.parameters())
    assert next(backbone.encoder.parameters()).dtype == torch.bfloat16


def test_backbone_rejects_bad_tap_blocks_and_inputs():
    with pytest.raises(DemsegError, match="tap blocks"):
        MaeBackbone(small_encoder(), tap_blocks=(1, 4))
    backbone = MaeBackbone(small_encoder(), tap_blocks=(1,))
    with pytest.raises(DemsegError, match="channels|expects"):
        backbone(torch.randn(1, 3, IMAGE_PX, IMAGE_PX))
    with pytest.raises(DemsegError, match="multiple of the patch"):
        backbone(torch.randn(1, 1, IMAGE_PX + 4, IMAGE_PX))


def test_build_backbone_with_the_tiny_arch_taps_blocks_3_5_7_11():
    backbone = build_backbone("tiny", image_size=32)
    maps = backbone(torch.randn(1, 1, 32, 32))
    assert backbone.tap_blocks == (3, 5, 7, 11)
    assert [tuple(feature.shape) for feature in maps] == [(1, 192, 2, 2)] * 4
    assert backbone.weights_metadata["source"] == "random"
    assert backbone.encoder.embeddings.position_embeddings.any()


def test_mae_config_follows_the_paper_for_base():
    config = mae_config("base")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers) == (512, 8)
    assert (config.image_size, config.patch_size, config.mask_ratio) == (224, 16, 0.75)
    with pytest.raises(DemsegError, match="tiny, small, base"):
        mae_config("gigantic")


def test_backbone_dtype_names_resolve_and_auto_picks_a_supported_dtype():
    assert resolve_dtype("fp32") is torch.float32 and resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("auto") in (torch.bfloat16, torch.float32)
    with pytest.raises(DemsegError, match="unknown precision"):
        resolve_dtype("half")


def test_auto_precision_is_measured_once_per_machine_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(precision, "_decided", {})
    calls = []

    def fake_measure():
        calls.append(1)
        return {"fp32_gflops": 300.0, "bf16_gflops": 160.0, "choice": "fp32"}  # a CPU with slow bf16

    monkeypatch.setattr(precision, "measure", fake_measure)
    assert precision.resolve_precision("auto") == "fp32" and resolve_dtype("auto") is torch.float32
    monkeypatch.setattr(precision, "_decided", {})  # a new process: reads the cache instead of measuring
    assert precision.resolve_precision("auto") == "fp32" and len(calls) == 1
    assert (tmp_path / "demseg" / "precision.json").exists()
    monkeypatch.setenv(precision.ENV_OVERRIDE, "bf16")
    assert precision.resolve_precision("auto") == "bf16"
    assert precision.resolve_precision("auto", device="cuda") == "bf16"


def test_the_measured_choice_prefers_fp32_unless_bf16_is_clearly_faster(monkeypatch):
    speeds = {torch.float32: 314.0, torch.bfloat16: 165.0}  # the AVX512-BF16 CPU of issue 9
    monkeypatch.setattr(precision, "matmul_gflops", lambda dtype: speeds[dtype])
    assert precision.measure()["choice"] == "fp32"
    speeds[torch.bfloat16] = 3000.0  # a CPU with AMX
    assert precision.measure()["choice"] == "bf16"


# --- neck, head, model -------------------------------------------------------------------------


def test_neck_rescales_to_a_four_level_pyramid():
    features = [torch.randn(2, 32, 14, 14) for _ in range(4)]
    levels = ViTPyramidNeck(32, out_channels=16)(features)
    assert [tuple(level.shape) for level in levels] == [(2, 16, 56, 56), (2, 16, 28, 28), (2, 16, 14, 14),
                                                        (2, 16, 7, 7)]
    assert ViTPyramidNeck(32)(features)[2].shape[1] == 32


def test_segmentation_head_returns_logits_at_output_size_and_aux_only_in_training():
    head = SegmentationHead(32, num_classes=3, channels=16, aux_head=True)
    features = [torch.randn(2, 32, GRID, GRID) for _ in range(4)]
    head.train()
    logits, aux = head(features, output_size=(IMAGE_PX, IMAGE_PX))
    assert logits.shape == aux.shape == (2, 3, IMAGE_PX, IMAGE_PX)
    head.eval()
    assert head(features, output_size=(IMAGE_PX, IMAGE_PX)).shape == (2, 3, IMAGE_PX, IMAGE_PX)


def test_group_norm_head_trains_on_a_single_tile():
    head = SegmentationHead(32, num_classes=2, channels=16, norm="group").train()
    logits = head([torch.randn(1, 32, GRID, GRID) for _ in range(4)], output_size=(IMAGE_PX, IMAGE_PX))
    assert logits.shape == (1, 2, IMAGE_PX, IMAGE_PX)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gradients_reach_the_head_but_not_the_frozen_backbone(dtype):
    backbone = MaeBackbone(small_encoder(), tap_blocks=(0, 1, 2, 3), dtype=dtype)
    model = MaeUperNet(backbone, SegmentationHead(32, num_classes=2, channels=16, aux_head=True)).train()
    logits, aux = model(torch.randn(2, 1, IMAGE_PX, IMAGE_PX))
    (logits.square().mean() + 0.4 * aux.square().mean()).backward()
    assert all(parameter.grad is not None for parameter in model.head.parameters())
    assert model.head.decoder.classifier[1].weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in model.backbone.parameters())


def test_mae_upernet_needs_four_tap_blocks():
    with pytest.raises(DemsegError, match="4 tap blocks"):
        MaeUperNet(MaeBackbone(small_encoder(), tap_blocks=(1, 2)), SegmentationHead(32, channels=16))


@pytest.mark.parametrize("up_mode", ["transposed", "bilinear"])
def test_unet_returns_logits_at_input_size(up_mode):
    unet = UNet(in_channels=1, num_classes=2, base_width=4, up_mode=up_mode)
    assert unet(torch.randn(2, 1, 32, 48)).shape == (2, 2, 32, 48)
    with pytest.raises(DemsegError, match="multiple of 16"):
        unet(torch.randn(1, 1, 40, 32))


def test_unet_widths_double_per_level():
    unet = UNet(in_channels=1, num_classes=2, base_width=4)
    assert [down[1][0].out_channels for down in unet.downs] == [8, 16, 32, 64]


def test_the_builder_knows_every_model_name_the_config_accepts():
    assert set(MODEL_NAMES) == set(MODELS)
    assert isinstance(build(ModelConfig(model="unet", unet_width=4)), UNet)
    model = build(ModelConfig(model="mae-upernet", backbone_weights="random", tile_size_px=32, head_width=8,
                              neck_width=8, backbone_dtype="fp32"))
    assert isinstance(model, MaeUperNet) and model.backbone.num_channels == 2  # relief+slope
    with pytest.raises(ValueError):
        ModelConfig(model="segformer")


def test_shipped_encoder_names_load_from_every_path_and_unknown_names_list_the_known_ones():
    from safetensors.torch import load_file

    from demseg.models.encoders import shipped

    backbone = build_backbone(weights="dem-tiny", dtype="fp32")  # as a Python user writes it: no channel count
    assert backbone.weights_metadata["normalisation"] == "relief+slope" and backbone.embed_dim == 192
    assert backbone.num_channels == 2
    kernel = load_file(str(shipped("dem-tiny").path))["embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(backbone.encoder.embeddings.patch_embeddings.projection.weight, kernel.float(),
                               atol=0, rtol=0)  # shipped as fp16
    assert build_backbone(weights="dem-tiny", num_channels=2, dtype="fp32").num_channels == 2
    assert build(ModelConfig(backbone_weights="dem-tiny", backbone_dtype="fp32")).backbone.embed_dim == 192
    with pytest.raises(DemsegError, match="dem-tiny"):
        build_backbone(weights="dem-gigantic", num_channels=2)


def test_the_builder_checks_recipe_and_channels_on_every_path():
    with pytest.raises(DemsegError, match="channel"):
        build(ModelConfig(backbone_weights="dem-tiny", recipe="minmax", backbone_dtype="fp32"))
    with pytest.raises(DemsegError, match="pre-trained on 'relief\\+slope'"):
        build(ModelConfig(backbone_weights="dem-tiny", recipe="zscore+slope", backbone_dtype="fp32"))
    backbone = build_backbone(weights="dem-tiny", num_channels=2, dtype="fp32")
    with pytest.raises(DemsegError, match="pre-trained on"):
        build(ModelConfig(backbone_weights="dem-tiny", recipe="zscore+slope"), backbone=backbone)
