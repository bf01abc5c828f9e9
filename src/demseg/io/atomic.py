"""Atomic file writes: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from demseg.errors import DemsegError
from demseg.io.folders import folder_lock, os_error_message


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def staging_folder(target: Path, suffix: str = ".partial") -> Path:
    """A new hidden folder beside ``target`` to build it in, with the permissions the umask allows.

    ``tempfile.mkdtemp`` makes owner-only (0700) folders; a folder renamed into place must not keep
    that, or other users cannot read a world or a rasterised dataset.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    staging.chmod(0o777 & ~UMASK)
    return staging


@contextlib.contextmanager
def staging_lock(target: Path) -> Iterator[None]:
    """Hold the lock on building ``target`` in a staging folder beside it, after removing the staging (and
    swapped-out ``.old``) folders a killed earlier build left there: a running build holds the lock, so its
    folder is never taken for a leftover."""
    with folder_lock(target.parent, f"{target.name}.staging"):
        left = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.(partial|old)")
        for entry in target.parent.iterdir():
            if left.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        yield


@contextlib.contextmanager
def atomic_folder(target: Path, before_publish: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``target``; it becomes ``target`` (one rename) only if the block succeeds.

    The one way demseg builds a whole output folder (a rasterised dataset, a synthetic world):
    staging folders a killed earlier build left are removed first, under a lock; ``before_publish``
    re-checks the target just before it is replaced (another process may have written it
    meanwhile); an earlier ``target`` is swapped out whole, then removed. A failed write is one
    DemsegError naming ``target``, and the staging folder never outlives the block.
    """
    with write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    with staging_lock(target):
        with write_errors(target):
            staging = staging_folder(target)
        try:
            with write_errors(target):
                yield staging
                if before_publish is not None:
                    before_publish()
                _publish(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path) -> None:
    """Move a finished folder from ``staging`` to ``target``: one rename, an earlier one swapped out whole."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """Turn an OSError (raw, or the cause of an atomic writer's DemsegError) into one line on ``target``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(exc, target) from exc
    except DemsegError as exc:
        if not isinstance(exc.__cause__, OSError):
            raise
        raise _write_error(exc.__cause__, target) from exc


def _write_error(exc: OSError, target: Path) -> DemsegError:
    if exc.errno == errno.ENOSPC:
        return DemsegError(f"no space left on device writing {target}")
    return DemsegError(f"could not write {target}: {exc.strerror or exc}")


FULL_DEVICE_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


def device_is_full(directory: Path) -> bool:
    """True when the file system holding ``directory`` has (almost) no space left."""
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows) or the folder is gone
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DEVICE_BYTES


def _shown(target: Path) -> str:
    """The path to name in a message: a temporary (hidden ``.partial``) name is shown as its folder."""
    return str(target.parent) if target.name.startswith(".") and ".partial" in target.name else str(target)


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits, ``_``, ``.`` and ``-`` replaced by ``_``.

    Temporary and lock names use it: GDAL drivers split some paths at ``;`` or ``,``, and glob
    patterns treat ``[`` and ``*`` as syntax.
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash, a full disk or an exception inside the block removes the temporary file,
    so no half-written file that looks valid is ever left at ``target``. Some writers (GDAL,
    SQLite) report a full disk as a failure of their own; when the disk is full after any
    failure, the error says so.
    """
    target = Path(target)
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemsegError(os_error_message(exc, f"the output folder {directory}")) from exc
    if not os.access(directory, os.W_OK):
        raise DemsegError(f"output folder is not writable: {directory}")
    # keep the real extension last so GDAL drivers that sniff it still work
    ext = suffix if suffix is not None else "".join(target.suffixes[-1:])
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{safe_name(target.stem)}.", suffix=f".partial{ext}",
                                        dir=directory)
    except OSError as exc:
        raise DemsegError(os_error_message(exc, str(target))) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # drivers want to create the file themselves
    try:
        yield tmp
        if not tmp.exists():
            raise DemsegError(f"nothing was written for {target}")
        # some writers create files owner-only (0600): give the result the permissions the umask allows
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, target)
    except OSError as exc:
        raise DemsegError(os_error_message(exc, _shown(target))) from exc
    except Exception as exc:
        says_full = "no space left" in str(exc).lower()
        if (isinstance(exc, DemsegError) and says_full) or not (says_full or device_is_full(directory)):
            raise
        # e.g. safetensors' SafetensorError, GDAL's and SQLite's errors: one line, an OSError as the cause
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        raise DemsegError(os_error_message(full, _shown(target))) from full
    finally:
        for leftover in directory.glob(f"{tmp.name}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
