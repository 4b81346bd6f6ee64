"""Writes that never replace what they did not check: locks, unique temporary files, exclusive creates.

Every place where galmeta writes a user's file goes through here: snapshot imports
(:mod:`galmeta.data`), student copies (:func:`galmeta.course.make_student_copies`) and checkpoints
(:meth:`galmeta.maml_torch.MetaLearner.save`).

* :func:`exclusive_lock` serialises a check-then-write between processes (an advisory ``flock`` on a
  lock file beside the target; on Windows, ``msvcrt.locking`` on its first byte).
* :func:`atomic_write` writes to a temporary file with a unique name in the target's folder and
  renames it into place, so a reader sees the old file or the new one, never half of one, and two
  writers never share a temporary file. The temporary file is locked while it is written, so that
  :func:`remove_stale_parts` can tell an abandoned ``*.part`` file (its writer was killed) from one
  being written right now.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None

__all__ = ["LockTimeout", "exclusive_lock", "atomic_write", "stale_parts", "remove_stale_parts", "create_exclusive",
           "umask"]

#: Suffix of every temporary file galmeta writes; such a file left behind means its writer was killed.
PART_SUFFIX = ".part"


class LockTimeout(RuntimeError):
    """Another galmeta process holds the lock; nothing was changed."""


def umask() -> int:
    """The process's umask (read without changing it for longer than an instant)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _try_flock(fd) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    if msvcrt is not None:  # pragma: no cover - Windows: a lock on the file's first byte
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    return True  # pragma: no cover - neither: no locking


@contextlib.contextmanager
def exclusive_lock(path, what: str, timeout: float = 60.0, poll: float = 0.05):
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    path : path-like
        The lock file (kept afterwards: removing it would let a third process lock a different file).
    what : str
        What is being protected, for the message (e.g. ``"the snapshot 'course'"``).
    timeout : float
        Seconds to wait for another process to finish.

    Raises
    ------
    LockTimeout
        When another process still holds the lock after ``timeout`` seconds; nothing was changed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    try:
        while not _try_flock(fd):
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another galmeta process is writing {what} (it holds {path}); waited {timeout:g} s and changed "
                    "nothing. Let it finish, then run this again."
                )
            time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def atomic_write(path, mode: int | None = None):
    """Yield a unique temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file is ``<name>.<random>.part``, locked while the block runs; on any error it is
    removed and ``path`` is untouched. ``mode`` defaults to 0o666 less the umask (a shared classroom data
    home must be readable; :func:`tempfile.mkstemp` makes 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=PART_SUFFIX, dir=path.parent)
    try:
        _try_flock(fd)  # a fresh file: nobody else holds it
        yield Path(tmp)
        os.chmod(tmp, (0o666 & ~umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def create_exclusive(path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if no file of that name exists; returns whether it did."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def stale_parts(folder, pattern: str = "**/*" + PART_SUFFIX, min_age: float = 2.0) -> list[Path]:
    """Temporary ``*.part`` files under ``folder`` whose writer is gone (nobody holds their lock).

    Files younger than ``min_age`` seconds are left alone: their writer may not have locked them yet.
    """
    found = []
    now = time.time()
    for part in sorted(Path(folder).glob(pattern)):
        try:
            if not part.is_file() or now - part.stat().st_mtime < min_age:
                continue
        except OSError:
            continue
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _try_flock(fd):
                found.append(part)
        finally:
            os.close(fd)
    return found


def remove_stale_parts(folder, pattern: str = "**/*" + PART_SUFFIX, min_age: float = 2.0) -> list[Path]:
    """Remove the abandoned temporary files of :func:`stale_parts`; returns what was removed."""
    removed = []
    for part in stale_parts(folder, pattern, min_age):
        try:
            part.unlink()
            removed.append(part)
        except FileNotFoundError:
            pass
    return removed
