"""Files a node keeps under ``NodeConfig.state_dir``: written atomically and durably.

Both the member snapshot (membership) and the election's ``(term, vote)``
state go through :func:`write_atomic`, so a crash or a full disk at any
point leaves either the previous file or the new one, never a torn or
empty one, and a write that returned survives a power loss:

1. the bytes go to a fresh temporary file in the same directory (so the
   rename below stays within one file system), which is fsynced;
2. ``os.replace`` puts it in place of the old file (atomic on POSIX and
   Windows);
3. the directory is fsynced, so the rename itself is durable.

If any step fails the temporary file is removed and the exception
propagates; the old file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

__all__ = ["read_state", "safe_file_name", "write_atomic"]


def safe_file_name(name: str) -> str:
    """``name`` with every character a file name should not hold replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (creating its
    directory if needed).

    Raises:
        OSError: the file could not be written; the previous content of
            ``path`` (if any) is intact and no temporary file is left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two nodes sharing a state_dir, or a stale
    # temporary file left by a crash, never collide with this write.
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    if os.name == "nt":  # pragma: no cover - Windows cannot open a directory
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def read_state(path: Path) -> bytes | None:
    """The content of ``path``, or ``None`` if it does not exist.

    Raises:
        OSError: it exists but cannot be read.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
