"""The one place that decides bf16 or fp32: by measuring this machine once, not by reading CPU flags.

CPU flags mislead both ways: on a CPU without native bf16 (AVX2 only) a bf16 matmul ran at
0.9 GFLOP/s against 144 in fp32, and on one that reports AVX512-BF16 (no AMX) bf16 ran at 165
against 314, so picking bf16 from the flag made the frozen ViT-tiny 1.5x slower; on a CPU with
AMX, bf16 ran 11x faster than fp32. :func:`fastest_dtype` therefore times a matmul of the size a
ViT block multiplies in both dtypes at first use and keeps the answer in a small JSON cache per
machine (CPU model, thread count, torch version). ``DEMSEG_PRECISION=bf16|fp32`` overrides it,
as do the ``--backbone-dtype`` / ``--precision`` flags; a CUDA device always gets bf16.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from demseg.errors import DemsegError
from demseg.io.folders import CACHE_ENV, cache_root  # noqa: F401 (CACHE_ENV: tests point it elsewhere)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_ALIASES = {"bfloat16": "bf16", "float32": "fp32", "bf16": "bf16", "fp32": "fp32"}
PRECISION_CHOICES = ("auto", "bf16", "fp32")
ENV_OVERRIDE = "DEMSEG_PRECISION"
# bf16 must win clearly: activations, norms and softmax do not speed up as much as the matmuls
BF16_MIN_SPEEDUP = 1.3
# (tokens of a batch of 8 tiles) x (ViT-small width) @ (width) x (MLP width): a block's biggest matmul
PROBE_SHAPE = (1568, 384, 1536)

_decided: dict[str, str] = {}


def cpu_name() -> str:
    """The CPU model as the OS reports it (or the platform's processor string)."""
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    return cache_root() / "precision.json"


def _machine_key() -> str:
    return f"{cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def matmul_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 3) -> float:
    """Measured GFLOP/s of one (m, k) @ (k, n) matmul in ``dtype`` on this CPU (best of ``repeats``)."""
    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up: the first call pays for kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / max(best, 1e-9) / 1e9


def measure() -> dict:
    """Time both dtypes now; returns {"fp32_gflops", "bf16_gflops", "choice"}."""
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    return {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1),
            "choice": "bf16" if bf16 >= BF16_MIN_SPEEDUP * fp32 else "fp32"}


def _read_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(entries: dict) -> None:
    path = _cache_file()
    with contextlib.suppress(OSError):  # a read-only home only costs a re-measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=2))
        os.replace(tmp, path)


def fastest_cpu_precision() -> str:
    """``"bf16"`` or ``"fp32"``: the faster on this CPU, measured once per machine and cached."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        return normalise_precision(override, what=ENV_OVERRIDE)
    key = _machine_key()
    if key not in _decided:
        entries = _read_cache()
        if key not in entries or entries[key].get("choice") not in DTYPES:
            entries[key] = measure()
            _write_cache(entries)
        _decided[key] = entries[key]["choice"]
    return _decided[key]


def normalise_precision(name: str, what: str = "precision") -> str:
    """``auto``, ``bf16`` or ``fp32`` from a user string (bfloat16/float32 accepted); else DemsegError."""
    key = str(name).lower()
    if key == "auto":
        return key
    if key not in DTYPE_ALIASES:
        raise DemsegError(f"unknown {what} {name!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    return DTYPE_ALIASES[key]


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``bf16`` or ``fp32`` for a requested precision: ``auto`` is bf16 on CUDA, else measured."""
    precision = normalise_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if str(device).startswith("cuda") else fastest_cpu_precision()


def resolve_dtype(dtype: torch.dtype | str, device: str = "cpu") -> torch.dtype:
    """A torch dtype for a dtype or a precision name (auto, bf16, fp32, bfloat16, float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[resolve_precision(dtype, device)]
