"""Dask for the commands that spread work over processes: predict (scenes) and experiment (runs).

``dask_client(workers, scheduler)`` is a client of an existing cluster (``scheduler``, e.g.
``tcp://host:8786``, reached within a timeout or one clear error) or of a local cluster of
``workers`` processes with one thread each. Work is written to a shared file system by the
workers, so an interrupted grid resumes from what is on disk.
"""

from __future__ import annotations

import logging
import threading

import torch

from demseg.errors import DemsegError


def require_dask() -> None:
    """One clear error naming the install command where dask's distributed scheduler is not installed."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError as exc:
        raise DemsegError("several workers or a scheduler need dask: pip install 'demseg[dask]'") from exc


def dask_client(workers: int, scheduler: str | None, timeout_s: float = 30.0):
    """(client, local cluster or None): the cluster at ``scheduler``, else ``workers`` local processes."""
    require_dask()
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return connect(Client, scheduler, timeout_s), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def connect(client_class, address: str, timeout_s: float):
    """A client of the scheduler at ``address``, or one clear error within about ``timeout_s`` seconds.

    A listener that is not a Dask scheduler (e.g. an HTTP server) accepts the TCP connection and
    may never answer the handshake, so the attempt runs in a daemon thread with a deadline of
    its own (a daemon thread left waiting does not keep the process alive).
    """
    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["client"] = client_class(address, timeout=f"{timeout_s}s")
        except Exception as exc:  # noqa: BLE001 - reported below as one line
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, name="demseg-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout_s + 5)
    if "client" in outcome:
        return outcome["client"]
    if "error" in outcome:
        reason = str(outcome["error"]).splitlines()[0] if str(outcome["error"]) else type(outcome["error"]).__name__
        raise DemsegError(f"cannot reach the Dask scheduler {address}: {reason}")
    raise DemsegError(f"the Dask scheduler {address} did not answer within {timeout_s:g} s (is it a Dask scheduler?)")


def worker_threads() -> None:
    """Let torch use the threads the Dask worker was given (1 on a local cluster of ``workers=N``)."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        threads = 1
    torch.set_num_threads(max(1, int(threads)))
