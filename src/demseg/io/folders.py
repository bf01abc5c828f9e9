"""Output folders: the one helper that creates, refuses, clears or reuses them, and a lock per folder.

Train, experiment and pre-training open their folder with :func:`out_dir` (predict uses
:func:`make_dir` and a lock per scene; synth and rasterize build in a staging folder and rename
it). Its rules: a path that is a file is refused; a folder that holds finished work is refused
unless ``overwrite`` (or resumed by the caller); a folder that holds nothing finished (a failed
earlier run) is reused; a folder that cannot be created or written (read-only parent, full disk)
is one clear error. :func:`folder_lock` stops two processes from writing one folder at once; the
OS drops the lock when its process dies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from demseg.errors import DemsegError

CACHE_ENV = "DEMSEG_CACHE_DIR"


def cache_root() -> Path:
    """demseg's cache folder: ``$DEMSEG_CACHE_DIR/demseg``, else ``$XDG_CACHE_HOME/demseg``, else ``~/.cache/demseg``."""
    root = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "demseg"


def os_error_message(exc: Exception, what: str) -> str:
    """One line naming what failed and why, with a plain sentence for a full disk or a refused folder.

    Takes OSErrors and the errors of libraries that only carry the reason in their text (GDAL's).
    """
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return f"no space left on the device writing {what}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in text:
        return f"permission denied writing {what}"
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return f"could not write {what}: {reason}"


MARKER = ".demseg-output"  # written into every folder demseg creates, naming the command: its leftovers may be cleared


def _holds_anything(folder: Path) -> bool:
    return any(not entry.name.startswith(".demseg") for entry in folder.iterdir())


def _made_by_demseg(folder: Path) -> bool:
    return (folder / MARKER).exists()


def made_by(folder: Path) -> str | None:
    """The demseg command that made ``folder``: its marker, else (an older demseg's empty marker) what its
    files say (:func:`layout_of`, '' when they say nothing); None for a folder without a marker."""
    try:
        named = (folder / MARKER).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        named = ""
    return named or layout_of(folder)


def layout_of(folder: Path) -> str:
    """The demseg command whose output ``folder`` looks like, from its files ('' when none)."""
    has = {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
    if "runs" in has or "experiment.json" in has:
        return "experiment"
    if "last" in has or "encoder.safetensors" in has:
        return "pretrain"
    if "world.json" in has:
        return "synth"
    if "config.json" in has or "model.safetensors" in has or "checkpoint.pt" in has:
        return "train"
    if "manifest.json" in has and "dataset.yaml" in has:
        return "rasterize"
    if "results.csv" in has and "summary.md" in has:
        return "report"
    return ""


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DemsegError(f"cannot resolve the path {path}: {exc}") from exc


NAME_MAX_BYTES = 255  # the longest file or folder name most file systems take (ext4, XFS, APFS, NTFS)


def check_name_lengths(path: str | os.PathLike, what: str = "path") -> None:
    """Refuse a path with a file or folder name longer than the file system takes, before any work."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise DemsegError(f"the {what} {path} has a name of {len(os.fsencode(part))} bytes "
                              f"({part[:24]}...); file systems take at most {NAME_MAX_BYTES}: give a shorter path")


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                      what: str = "output folder") -> Path:
    """Refuse an output that is empty, is or holds the current folder, or is, holds or lies inside an input.

    ``inputs`` are every file and folder a command reads (specs and the data they name, starting
    runs, point clouds): writing (or clearing, with --overwrite) there would destroy them.
    """
    if not str(out).strip():
        raise DemsegError(f"the {what} is empty: give a path")
    check_name_lengths(out, what)
    target = _resolved(out)
    here = _resolved(Path.cwd())
    if target == here or target in here.parents:
        raise DemsegError(f"the {what} {out} is the current folder or holds it: give a new folder")
    for item in inputs:
        if item is None or not str(item).strip():
            continue
        source = _resolved(item)
        if source == target or target in source.parents:
            raise DemsegError(f"the {what} {out} {'is' if source == target else 'holds'} an input of this command "
                              f"({item}): write somewhere else")
        if source in target.parents and source.is_dir():
            raise DemsegError(f"the {what} {out} lies inside an input folder of this command ({item}): write "
                              "somewhere else")
    return target


def make_dir(out: str | os.PathLike) -> Path:
    """Create ``out`` (and its parents) and check it is writable; returns it as a Path."""
    check_name_lengths(out, "output folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DemsegError(f"output path exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".demseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DemsegError(os_error_message(exc, f"the output folder {out}")) from exc
    return out


@contextlib.contextmanager
def out_dir(out: str | os.PathLike, overwrite: bool = False, finished: Callable[[Path], bool] | None = None,
            keep: bool = False, discard_on_error: bool = False, command: str = "",
            inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Create and lock an output folder for the duration of the block; yields it as a Path.

    The folder may not be, hold or lie inside any of ``inputs``, nor be or hold the current folder
    (:func:`check_output_path`). With ``keep`` an existing folder is used as it is (experiments and
    pre-training resume). Otherwise a non-empty folder is cleared only if demseg's ``command``
    made it (its marker says so) and either ``overwrite`` is set or ``finished(out)`` says it holds
    no finished work (a failed earlier run). A folder of the user's own files, or the output of
    another demseg command, is refused even with --overwrite. The lock is taken before anything
    is cleared: two processes never write one folder at once. With ``discard_on_error`` (and not
    ``keep``) an exception inside the block removes what the block wrote, so a run that fails
    half-way (e.g. a full disk) leaves an empty folder.
    """
    check_output_path(out, inputs)
    out = make_dir(out)
    with folder_lock(out):
        if not keep and _holds_anything(out):
            maker = made_by(out)
            if maker is None:
                raise DemsegError(f"output folder exists and holds files demseg did not write: {out} (demseg "
                                  "never clears such a folder, even with --overwrite: give a new folder)")
            if command and maker and maker != command:
                raise DemsegError(f"output folder {out} holds the output of `demseg {maker}`; `demseg {command}` "
                                  "never replaces it, even with --overwrite: give a new folder")
            # what an older demseg made without naming it is replaced only on request
            reusable = bool(maker) and finished is not None and not finished(out)
            if not (overwrite or reusable):
                raise DemsegError(f"output folder exists: {out} (pass --overwrite to replace it)")
            _clear(out)
        if keep and command and _holds_anything(out) and made_by(out) not in (None, "", command):
            raise DemsegError(f"output folder {out} holds the output of `demseg {made_by(out)}`, not of `demseg "
                              f"{command}`: give a new folder")
        (out / MARKER).write_text(command)
        try:
            yield out
        except BaseException:
            if discard_on_error and not keep:
                with contextlib.suppress(DemsegError):
                    _clear(out)  # everything in it was written by this block: it was empty or cleared above
            raise


def _clear(out: Path) -> None:
    try:
        for entry in out.iterdir():
            if entry.name.startswith(".demseg"):
                continue  # the lock file (the lock itself decides) and the marker
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    except OSError as exc:
        raise DemsegError(f"cannot clear the output folder {out}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str = "demseg") -> Iterator[None]:
    """Hold ``.<name>.lock`` in ``folder`` while writing it; a second process gets one clear error."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    path = Path(folder) / f".{name}.lock"
    handle = _locked_handle(path, fcntl)
    with handle:
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()


def _locked_handle(path: Path, fcntl, attempts: int = 3):
    """An open, flock-ed handle of the lock file ``path``; one clear error if another process holds it."""
    for _ in range(attempts):
        try:
            handle = open(path, "a")
        except OSError as exc:
            raise DemsegError(os_error_message(exc, f"the lock file {path}")) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DemsegError(f"{path.parent} is being written by another demseg process ({path.name} is "
                              "locked)") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return handle
        # the previous holder removed the file between our open and our lock: lock the new one instead
        handle.close()
    raise DemsegError(f"{path.parent} is being written by another demseg process ({path.name} keeps changing)")
