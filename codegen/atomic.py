"""Files are replaced whole or not at all: a reader, a crash or a Ctrl-C never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, content: str | bytes) -> bool:
    """Replace `path` with `content` in one rename, and only if the bytes differ."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:  # KeyboardInterrupt included: leave no temporary behind
        Path(temp).unlink(missing_ok=True)
        raise
    return True
