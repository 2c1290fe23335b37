"""Files are replaced whole or not at all: a reader, a crash or a Ctrl-C never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask (readable only by setting it, so set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, content: str | bytes) -> bool:
    """Replace `path` with `content` in one rename, and only if the bytes differ."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the file it replaces was created as an ordinary
        # file would be, readable as the user's umask allows (reports are meant to be shared).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:  # KeyboardInterrupt included: leave no temporary behind
        Path(temp).unlink(missing_ok=True)
        raise
    return True
