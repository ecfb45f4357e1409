"""Files written whole or not at all: a reader never finds half a file, a failure leaves the old one.

The text goes to a temporary file in the same folder (same file system, so the rename is atomic),
is flushed to disk, and only then replaces the target. A writer that must validate its content does
so before calling :func:`write_text`, so a refused row never touches the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` whole or not at all (the folder is created if needed)."""
    path = Path(path)
    data = text.encode(encoding)  # an unencodable character fails here, before any file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def file_name(text: str, what: str) -> str:
    """``text`` as (part of) one file's name in its folder, or a ValueError naming ``what``: letters, digits
    and ``_ . + -`` only, not first a dot or a dash, so it never names another folder or hides the file."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*|", text):
        raise ValueError(f"{what} {text!r} may hold only letters, digits and _ . + - (not first . or -), "
                         "so the file stays in its folder")
    return text
