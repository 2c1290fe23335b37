"""Reading a JSON file a user named, as one line when it cannot be: the fingerprints and the
files they are imported from all start here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvm_fwspec.spec.errors import UsageError


def read_json(path: Path, what: str) -> Any:
    """The document in `path`, or UsageError naming the file and why it is not `what` (a
    folder, a missing file, the line JSON broke at, bytes that are not UTF-8, nesting
    deeper than Python parses)."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not {what}")
    if path.exists() and not path.is_file():  # a FIFO would block the read for ever
        raise UsageError(f"{path}: is not a regular file, not {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: line {exc.lineno}: not {what}: {exc.msg} (column {exc.colno})"
        ) from None
    except RecursionError:
        raise UsageError(f"{path}: not {what}: JSON nested too deeply to read") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not {what}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not {what}: {exc}") from None
