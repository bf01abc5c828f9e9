"""Portable models: a run exported to ONNX, and an onnxruntime engine for ``demseg predict``.

``demseg export RUN --onnx`` writes ``RUN/model.onnx``: the whole network (frozen backbone and head,
or the UNet) from normalised windows ``input`` (N, C, T, T) float32 to ``logits`` (N, K, T, T), with
a dynamic batch size. Its metadata holds the run's config and the SHA-256 of the run's weights, so
predicting with a stale export (the run retrained since) is refused. Normalisation, blending and
vectorising stay in demseg: ``demseg predict RUN ... --engine onnx`` uses the same sliding windows
as the torch engine, only the network runs in onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from demseg.data.normalise import recipe_channels
from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path
from demseg.runs.config import TrainConfig
from demseg.runs.folder import RUN_FILES, load_run, read_run_config, run_weights_digest  # noqa: F401

ONNX_FILE = "model.onnx"
class _Logits(nn.Module):
    """The run's network as one graph: normalised windows in, float32 logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return (logits[0] if isinstance(logits, (tuple, list)) else logits).float()

OPSET = 18


def _check_export_target(target: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse to write over a run's own files, a link, a folder, or (without ``overwrite``) any existing file."""
    from demseg.io.folders import check_output_path

    check_output_path(target, what="export file")
    if target.is_symlink():
        raise DemsegError(f"--out {target} is a link: give the path of a new file")
    if target.is_dir():
        raise DemsegError(f"--out {target} is a folder: give the path of a file, e.g. {target / ONNX_FILE}")
    own = target.resolve().parent == run_dir.resolve()
    if own and target.name != ONNX_FILE:
        raise DemsegError(f"--out {target} would replace a file of the run itself: export to {run_dir / ONNX_FILE} "
                          "or outside the run folder")
    if target.exists() and not own and not overwrite:
        raise DemsegError(f"--out {target} exists (pass --overwrite to replace it)")


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write a run's network as ONNX (default ``RUN/model.onnx``, written atomically); returns the path.

    The run's own ``model.onnx`` is rewritten freely; any other existing file only with ``overwrite``,
    and never a file of the run itself or a link.
    """
    try:
        import onnx
    except ImportError as exc:
        raise DemsegError("ONNX export needs the onnx and onnxscript packages: pip install 'demseg[onnx]'") from exc
    from demseg.models.encoders import is_shipped_model, resolve_model_dir

    run_dir = resolve_model_dir(run_dir)
    if not run_dir.is_dir():
        raise DemsegError(f"not a demseg run folder: {run_dir}")
    if out is None and is_shipped_model(run_dir):
        raise DemsegError(f"{run_dir.name} is a shipped model: pass --out FILE for its ONNX export")
    model, config = load_run(run_dir)
    model = _Logits(model.float()).eval()
    channels = recipe_channels(config.recipe)
    example = torch.zeros((2, channels, config.tile_size_px, config.tile_size_px))
    target = Path(out) if out is not None else run_dir / ONNX_FILE
    _check_export_target(target, run_dir, overwrite)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with contextlib.redirect_stdout(io.StringIO()), _exporter_quiet(), torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes={"x": {0: batch}}, verbose=False)
    proto = program.model_proto
    metadata = {"demseg_config": config.model_dump_json(), "demseg_weights_sha256": run_weights_digest(run_dir),
                "demseg_task": config.task, "demseg_recipe": config.recipe,
                "demseg_tile_size_px": str(config.tile_size_px)}
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return target


@contextlib.contextmanager
def _exporter_quiet():
    """Silence what torch's ONNX exporter and onnxscript say as they work (their deprecations, their notes on
    optional packages such as "torchvision is not installed"), so a failed export is one line."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class OnnxModel:
    """An exported run in onnxruntime, called like the torch model: (N, C, T, T) tensor -> logits tensor."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise DemsegError("--engine onnx needs onnxruntime: pip install 'demseg[onnx]'") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
            raise DemsegError(f"not a readable ONNX model: {path} ({str(exc).splitlines()[0][:120]})") from exc
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"input": array})[0])

    def eval(self) -> OnnxModel:
        return self


def load_onnx_run(run_dir: str | os.PathLike) -> tuple[OnnxModel, TrainConfig]:
    """The exported network of a run and the run's config; a missing or stale export is one error line."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    path = run_dir / ONNX_FILE
    if not path.is_file():
        raise DemsegError(f"run {run_dir} has no {ONNX_FILE}: export it first with `demseg export {run_dir} --onnx`")
    model = OnnxModel(path)
    if model.metadata.get("demseg_weights_sha256") != run_weights_digest(run_dir):
        raise DemsegError(f"{path} was exported from other weights than the run's (retrained since?): "
                          f"export it again with `demseg export {run_dir} --onnx`")
    recorded = json.loads(model.metadata.get("demseg_config", "{}"))
    if recorded.get("recipe") != config.recipe or recorded.get("tile_size_px") != config.tile_size_px:
        raise DemsegError(f"{path} does not match the run's recipe or tile size: export it again")
    return model, config
