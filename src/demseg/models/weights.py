"""Every source of encoder weights, read without ever running code stored in a file.

``weights`` names one of:

* ``"random"``: a random encoder with the fixed sin-cos position embeddings;
* a shipped encoder's name (``dem-tiny``, see :mod:`demseg.models.encoders`);
* a folder with ``config.json`` (Hugging Face format) or a hub id: ``ViTMAEModel.from_pretrained``;
  a ``ViTMAEForPreTraining`` folder gives its encoder;
* ``*.pth`` / ``*.pt``: an official facebookresearch/mae checkpoint (timm key names under
  ``"model"``), read with ``torch.load(..., weights_only=True)``;
* ``*.safetensors``: demseg's own encoder file (``demseg pretrain``) with its JSON sidecar
  ``<stem>.json`` (or ``config.json`` beside it, or the copy in the file's header).

Each source becomes an :class:`EncoderWeights` (a state dict in ViTMAEModel key names plus the
config it was made for); one assembly step then checks the architecture, adapts RGB weights to
the data's channel count and the position table to the tile size, and loads strictly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers.utils.logging as hf_logging
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.models.encoders import resolve_weights
from demseg.models.vit import (
    ARCHS,
    ENCODER_FIELDS,
    MAE_LAYER_NORM_EPS,
    arch_name_of,
    arch_spec,
    init_sincos_position_embeddings,
    mae_config,
    sincos_position_embeddings,
)

SIDECAR_FORMAT = "demseg-mae-encoder"
HEADER_KEY = "demseg"  # the sidecar's JSON is also kept in the safetensors header under this key
TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
SAVED_CONFIG_FIELDS = (*ENCODER_FIELDS, "num_channels", "patch_size", "image_size", "qkv_bias",
                       "layer_norm_eps", "hidden_act")
PATCH_KERNEL_KEY = "embeddings.patch_embeddings.projection.weight"
POSITION_KEY = "embeddings.position_embeddings"

# official MAE (timm) key -> ViTMAEModel key; the fused qkv is split afterwards
OFFICIAL_RENAMES = (
    (r"cls_token", "embeddings.cls_token"),
    (r"pos_embed", POSITION_KEY),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"layers.\1.layernorm_before.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"layers.\1.attention.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.attention.o_proj.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"layers.\1.layernorm_after.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"layernorm.\1"),
)
# pre-training decoder and fine-tuning head: not part of the encoder
OFFICIAL_IGNORED_PREFIXES = ("decoder_", "mask_token", "head.", "fc_norm.")


@dataclass
class EncoderWeights:
    """Encoder weights in ViTMAEModel key names, the config they were made for, and where they came from."""

    state_dict: dict[str, Tensor]
    config: ViTMAEConfig
    metadata: dict
    rgb_adaptable: bool  # 3-channel ImageNet weights may be folded onto another channel count


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """Return an exception's message squeezed onto one line of at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sidecar_path(path: str | os.PathLike) -> Path:
    """Return the JSON sidecar path that describes a demseg ``.safetensors`` encoder file."""
    return Path(path).with_suffix(".json")


def load_encoder(
    weights: str, arch: str | None, num_channels: int | None = None, image_size: int = 224
) -> tuple[ViTMAEModel, dict]:
    """Return an fp32 ViTMAEModel in eval mode and metadata {"source", "arch", "method", ...} for ``weights``.

    ``arch`` None accepts whatever the weights hold ("tiny" for random weights); a named ``arch``
    must match them. ``num_channels`` None likewise takes the weights' own (1 for random weights).
    Every failure is a one-line DemsegError naming the weights.
    """
    if weights == "random":
        return _random_encoder(arch or "tiny", num_channels or 1, image_size)
    source = _read_weights(resolve_weights(str(weights)))
    name = source.metadata["source"]
    _check_arch(source.config, arch, name)
    try:
        _adapt_channels(source, num_channels, name)
        _adapt_patch_grid(source, image_size, name)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        # tensors missing or shaped otherwise than the description says: a broken or hostile file
        raise DemsegError(f"{name} does not fit its declared architecture: {_one_line(exc)}") from exc
    return _build_encoder(source, name)


def _random_encoder(arch: str, num_channels: int, image_size: int) -> tuple[ViTMAEModel, dict]:
    """Return a random encoder with sin-cos position embeddings and its metadata."""
    encoder = ViTMAEModel(mae_config(arch, num_channels=num_channels, image_size=image_size))
    init_sincos_position_embeddings(encoder)
    metadata = {"source": "random", "arch": arch, "method": "random-init"}
    return encoder.eval(), {**metadata, **_shape_metadata(encoder.config)}


def _shape_metadata(config: ViTMAEConfig) -> dict:
    """Return the input geometry an encoder expects, for the metadata."""
    return {"num_channels": config.num_channels, "image_size": config.image_size, "patch_size": config.patch_size}


def _looks_like_path(weights: str) -> bool:
    """Return True when ``weights`` is clearly meant as a local path rather than a hub id."""
    return (
        weights.startswith(("/", ".", "~"))
        or Path(weights).suffix.lower() in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX, ".json", ".bin")
        or weights.count("/") > 1
    )


def _read_weights(weights: str) -> EncoderWeights:
    """Return the encoder weights named by a folder, a file or a hub id."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return _read_huggingface(str(path))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES:
            return _read_official_checkpoint(path)
        if suffix == SAFETENSORS_SUFFIX:
            return _read_demseg_safetensors(path)
        raise DemsegError(
            f"unknown weights file type: {path} (expected .pth, .pt, .safetensors, a model folder or a hub id)"
        )
    if _looks_like_path(weights):
        raise DemsegError(f"weights not found: {weights}")
    return _read_huggingface(weights)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load report (the decoder keys of a pre-training model)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """False when the Hugging Face hub is off (HF_HUB_OFFLINE) or its host does not answer within ``timeout_s``."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return False
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _read_huggingface(location: str) -> EncoderWeights:
    """Return the encoder of a Hugging Face ViTMAE model folder or hub id."""
    is_folder = Path(location).is_dir()
    if is_folder and not (Path(location) / "config.json").is_file():
        raise DemsegError(f"model folder {location} has no config.json (expected a Hugging Face ViTMAE model)")
    # offline, a hub id is looked up in the local cache only: no retries, one line if it is not there
    local_only = not is_folder and not hub_reachable()
    try:
        with _quiet_transformers():
            model, info = ViTMAEModel.from_pretrained(
                location, dtype=torch.float32, weights_only=True, output_loading_info=True,
                local_files_only=local_only,
            )
    except pickle.UnpicklingError as exc:  # weights_only refused a pickle that would run code
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({needed.group(1)})" if needed else ""
        raise DemsegError(f"refusing {location}: its PyTorch weights hold pickled objects{what} that would need "
                          "code to load; only plain tensors (or model.safetensors) are read") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if local_only:
            raise DemsegError(f"cannot load ViTMAE weights {location!r}: no such local folder, the Hugging Face "
                              "hub is unreachable (offline) and the model is not in the local cache; download it "
                              "where there is internet and pass its folder") from exc
        raise DemsegError(
            f"cannot load ViTMAE weights {location!r} (no such local folder, and the hub has no such model): "
            f"{_one_line(exc)}"
        ) from exc
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise DemsegError(f"{location} is not a ViTMAE encoder: {len(missing)} weights missing, e.g. {missing[0]}")
    metadata = {
        "source": location,
        "method": "mae",
        "format": "huggingface",
        "saved_as": (model.config.architectures or ["ViTMAEModel"])[0],
    }
    config = copy.deepcopy(model.config)
    return EncoderWeights(model.state_dict(), config, metadata, rgb_adaptable=config.num_channels == 3)


def _torch_load_weights_only(path: Path) -> object:
    """Return the contents of a PyTorch file, refusing anything that would need code to unpickle."""
    try:
        # MAE training checkpoints carry their argparse.Namespace; it only restores plain attributes
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({needed.group(1)})" if needed else ""
        raise DemsegError(
            f"refusing {path}: it holds pickled objects{what} that would need code to load; "
            "only plain tensor checkpoints are read"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise DemsegError(f"cannot read {path} as a PyTorch checkpoint: {_one_line(exc)}") from exc
    except Exception as exc:  # bytes that are no pickle fail inside the unpickler in any way (KeyError, IndexError)
        raise DemsegError(f"cannot read {path} as a PyTorch checkpoint: it is not a file torch.save wrote") from exc


def official_to_hf_state_dict(official: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return an official MAE (timm-named) encoder state dict in ViTMAEModel key names.

    Decoder and classification-head keys are dropped; an unknown key raises DemsegError.
    """
    converted: dict[str, Tensor] = {}
    for key, tensor in official.items():
        if key.startswith(OFFICIAL_IGNORED_PREFIXES):
            continue
        for pattern, replacement in OFFICIAL_RENAMES:
            if re.fullmatch(pattern, key):
                converted[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            raise DemsegError(f"unexpected key {key!r}: not an MAE ViT encoder checkpoint")
    for key in [key for key in converted if ".attention.qkv." in key]:
        for part, tensor in zip(("q_proj", "k_proj", "v_proj"), converted.pop(key).chunk(3, dim=0), strict=True):
            converted[key.replace("qkv", part)] = tensor.clone()
    return converted


def _arch_from_sizes(hidden_size: int, num_layers: int, mlp_size: int) -> str | None:
    """Return the ARCHS name with these encoder sizes (heads cannot be read from weights), or None."""
    for name, spec in ARCHS.items():
        if (spec["hidden_size"], spec["num_hidden_layers"], spec["intermediate_size"]) == (
            hidden_size, num_layers, mlp_size,
        ):
            return name
    return None


def _official_config(state: dict[str, Tensor], path: Path) -> ViTMAEConfig:
    """Return the ViTMAEConfig an official MAE encoder state dict (in HF names) was made for."""
    if PATCH_KERNEL_KEY not in state or "layers.0.mlp.fc1.weight" not in state:
        raise DemsegError(f"{path} holds no MAE ViT encoder (no patch embedding or blocks)")
    hidden_size, num_channels, _, patch_size = state[PATCH_KERNEL_KEY].shape
    num_layers = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("layers."))
    mlp_size = state["layers.0.mlp.fc1.weight"].shape[0]
    arch = _arch_from_sizes(hidden_size, num_layers, mlp_size)
    if arch is None:
        raise DemsegError(
            f"{path}: an encoder of width {hidden_size} with {num_layers} blocks matches none of "
            f"{', '.join(ARCHS)}, so its number of attention heads is unknown"
        )
    num_patches = state[POSITION_KEY].shape[1] - 1 if POSITION_KEY in state else (224 // patch_size) ** 2
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise DemsegError(f"{path}: position table of {num_patches} patches is not a square grid")
    config = mae_config(arch, num_channels=num_channels, image_size=grid * patch_size, patch_size=patch_size)
    config.qkv_bias = "layers.0.attention.q_proj.bias" in state
    return config


def _read_official_checkpoint(path: Path) -> EncoderWeights:
    """Return the encoder of an official facebookresearch/mae ``.pth`` checkpoint."""
    checkpoint = _torch_load_weights_only(path)
    official = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(official, dict) or not all(isinstance(value, Tensor) for value in official.values()):
        raise DemsegError(f"{path} holds no state dict of tensors (expected an MAE checkpoint with a 'model' key)")
    try:
        state = official_to_hf_state_dict(official)
    except DemsegError as exc:
        raise DemsegError(f"{path}: {exc}") from exc
    config = _official_config(state, path)
    metadata = {"source": str(path), "method": "mae", "format": "official-mae"}
    if POSITION_KEY not in state:
        grid = config.image_size // config.patch_size
        state[POSITION_KEY] = sincos_position_embeddings(config.hidden_size, grid, grid).unsqueeze(0)
        metadata["position_embeddings"] = "sin-cos (absent from the checkpoint)"
    return EncoderWeights(state, config, metadata, rgb_adaptable=config.num_channels == 3)


def _read_description(path: Path) -> dict:
    """Return the JSON description of a demseg safetensors file: sidecar, config.json beside it, or header."""
    for candidate in (sidecar_path(path), path.parent / "config.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise DemsegError(f"cannot read the description {candidate}: {_one_line(exc)}") from exc
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError) as exc:
        raise DemsegError(f"cannot read {path}: corrupt or truncated safetensors file ({_one_line(exc)})") from exc
    if header is None:
        raise DemsegError(f"{path} has no description: expected {sidecar_path(path).name} beside it")
    return json.loads(header)


def _config_from_description(description: dict, path: Path) -> ViTMAEConfig:
    """Return the ViTMAEConfig described by a sidecar (HF config keys, sizes from ARCHS where absent)."""
    known_keys = ViTMAEConfig().to_dict()
    fields = {key: value for key, value in description.items() if key in known_keys}
    arch = description.get("arch")
    if arch in ARCHS:
        fields = {**ARCHS[arch], **fields}
    missing = [field for field in ENCODER_FIELDS if field not in fields]
    if missing:
        raise DemsegError(f"the description of {path} names no known arch and lacks {', '.join(missing)}")
    fields.setdefault("layer_norm_eps", MAE_LAYER_NORM_EPS)
    return ViTMAEConfig(**fields)


def _read_demseg_safetensors(path: Path) -> EncoderWeights:
    """Return the encoder stored by :func:`save_encoder` (keys optionally prefixed ``vit.``)."""
    description = _read_description(path)
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DemsegError(f"cannot read {path}: corrupt or truncated safetensors file ({_one_line(exc)})") from exc
    state = {key.removeprefix("vit."): tensor for key, tensor in stored.items() if not key.startswith("decoder.")}
    metadata = {**description, "source": str(path), "method": description.get("method", "mae"), "format": "demseg"}
    return EncoderWeights(state, _config_from_description(description, path), metadata, rgb_adaptable=False)


def _check_arch(config: ViTMAEConfig, arch: str | None, name: str) -> None:
    """Raise DemsegError when a requested architecture differs from the one the weights hold."""
    if arch is None:
        return
    arch_spec(arch)
    found = arch_name_of(config)
    if found != arch:
        raise DemsegError(
            f"{name} holds a {found} encoder (width {config.hidden_size}, {config.num_hidden_layers} blocks, "
            f"{config.num_attention_heads} heads), not {arch}"
        )


def _adapt_channels(source: EncoderWeights, num_channels: int | None, name: str) -> None:
    """Fold 3-channel (RGB) patch kernels onto ``num_channels`` inputs; other mismatches raise DemsegError.

    The kernels are summed over RGB and shared equally by the new channels, so an image repeated in
    every channel gives the same tokens as that image repeated in R, G and B.
    """
    have = source.config.num_channels
    if num_channels is None or have == num_channels:
        return
    if not source.rgb_adaptable:
        raise DemsegError(f"{name} was made for {have} input channel(s), the data has {num_channels}")
    kernel = source.state_dict[PATCH_KERNEL_KEY]
    source.state_dict[PATCH_KERNEL_KEY] = kernel.sum(dim=1, keepdim=True).repeat(1, num_channels, 1, 1) / num_channels
    source.config.num_channels = num_channels
    source.metadata["channel_adaptation"] = f"RGB patch kernels summed and shared by {num_channels} channel(s)"


def resize_position_embeddings(table: Tensor, grid: int) -> Tensor:
    """Return a (1, 1 + grid**2, D) position table for a new square patch grid.

    A standard sin-cos table is recomputed exactly; any other table is resized bicubically, as the
    MAE fine-tuning code does.
    """
    old_grid = math.isqrt(table.shape[1] - 1)
    dim = table.shape[-1]
    if dim % 4 == 0:
        expected = sincos_position_embeddings(dim, old_grid, old_grid).to(table.dtype)
        if torch.allclose(table[0].float(), expected.float(), atol=1e-3):
            return sincos_position_embeddings(dim, grid, grid).unsqueeze(0).to(table.dtype)
    patches = table[:, 1:].reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(table.dtype)
    return torch.cat([table[:, :1], patches], dim=1)


def _adapt_patch_grid(source: EncoderWeights, image_size: int, name: str) -> None:
    """Resize the position table when the tiles differ in size from the images the weights were made for."""
    config = source.config
    have = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    if have == image_size:
        return
    if image_size % config.patch_size:
        raise DemsegError(f"tile size {image_size} px is not a multiple of {name}'s patch size {config.patch_size} px")
    grid = image_size // config.patch_size
    source.state_dict[POSITION_KEY] = resize_position_embeddings(source.state_dict[POSITION_KEY], grid)
    config.image_size = image_size
    source.metadata["position_embeddings"] = f"resized from {have} px to {image_size} px tiles"


def _build_encoder(source: EncoderWeights, name: str) -> tuple[ViTMAEModel, dict]:
    """Return an fp32 ViTMAEModel holding ``source``'s weights (strict load) and its metadata."""
    encoder = ViTMAEModel(source.config)
    try:
        encoder.load_state_dict(source.state_dict, strict=True)
    except RuntimeError as exc:
        raise DemsegError(f"{name} does not fit its declared architecture: {_one_line(exc)}") from exc
    metadata = {**source.metadata, "arch": arch_name_of(source.config), **_shape_metadata(source.config)}
    if not encoder.embeddings.position_embeddings.detach().any():
        # a model built by transformers 5 without our sin-cos init: it never saw positions, keep it faithful
        warnings.warn(f"{name} has all-zero position embeddings; patches carry no position", stacklevel=3)
        metadata["position_embeddings"] = "all zero in the weights"
    return encoder.float().eval(), metadata


def save_encoder(model: ViTMAEModel | ViTMAEForPreTraining, path: str | os.PathLike, metadata: dict) -> None:
    """Write an encoder as ``.safetensors`` plus its JSON sidecar, each atomically.

    ``metadata`` (e.g. {"normalisation": ..., "method": "mae"}) is stored with the architecture
    fields; a pre-training model contributes its encoder only.
    """
    encoder = model.vit if isinstance(model, ViTMAEForPreTraining) else model
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise DemsegError(f"encoder files end in {SAFETENSORS_SUFFIX}, got {path}")
    config = encoder.config
    description = {
        **metadata,
        "format": SIDECAR_FORMAT,
        "arch": arch_name_of(config),
        **{field: getattr(config, field) for field in SAVED_CONFIG_FIELDS},
    }
    try:
        text = json.dumps(description, indent=2, sort_keys=True)
    except TypeError as exc:
        raise DemsegError(f"encoder metadata for {path} is not JSON-serialisable: {_one_line(exc)}") from exc
    tensors = {key: value.detach().cpu().contiguous() for key, value in encoder.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(description, sort_keys=True)})
    write_text_atomic(sidecar_path(path), text + "\n")
