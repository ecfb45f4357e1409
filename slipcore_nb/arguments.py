"""What a command-line flag accepts, checked while the command line is read (issue #38).

Each function here is an ``argparse`` ``type=``: a bad value stops the command before it loads a
model or touches a results file, with exit status 2 and argparse's ``argument --flag: ...`` line
followed by what the flag allows. The benchmarks and scripts share them, so ``--eval-limit 0`` means
the same thing (an error) everywhere instead of "the default" in one script and "nothing" in another.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

Refused = argparse.ArgumentTypeError


def count(least: int = 1):
    """An ``int`` of at least ``least`` (``count()`` for steps, prompts, ranks; ``count(0)`` where 0 means none)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Refused(f"{text!r} is not an int; give a whole number of at least {least}") from None
        if value < least:
            raise Refused(f"{text!r} is out of range: it must be at least {least}")
        return value

    parse.__name__ = "count"
    return parse


def positive_number(text: str) -> float:
    """A finite ``float`` above 0 (a learning rate, a ratio, seconds, MiB)."""
    try:
        value = float(text)
    except ValueError:
        raise Refused(f"{text!r} is not a number; give a finite number above 0") from None
    if not 0 < value < math.inf:
        raise Refused(f"{text!r} is out of range: it must be a finite number above 0")
    return value


def counts(least: int = 0):
    """Comma-separated ints of at least ``least``, at least one, sorted and without repeats (``0,25,50``)."""
    one = count(least)

    def parse(text: str) -> list[int]:
        items = [item.strip() for item in text.split(",")]
        if not text.strip() or "" in items:
            raise Refused(f"{text!r} has an empty item; give ints of at least {least} separated by commas")
        values = [one(item) for item in items]
        if len(set(values)) != len(values):
            raise Refused(f"{text!r} names a value twice")
        return sorted(values)

    parse.__name__ = "counts"
    return parse


def names(choices: tuple[str, ...]):
    """A comma-separated, non-empty subset of ``choices``, kept in the order of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",")]
        unknown = [item for item in items if item not in choices]
        if unknown or not text.strip():
            raise Refused(f"{', '.join(repr(u) for u in unknown) or 'nothing'} is not one of {', '.join(choices)}")
        if len(set(items)) != len(items):
            raise Refused(f"{text!r} names one twice")
        return [choice for choice in choices if choice in items]

    parse.__name__ = "names"
    return parse


def model_name(text: str) -> str:
    """A model name :func:`slipcore_nb.registry.get_spec` accepts (a registry name, hub id or folder)."""
    from .registry import get_spec

    try:
        get_spec(text)
    except ValueError as err:
        raise Refused(str(err)) from None
    return text


def file_part(text: str) -> str:
    """Text added to a file name (``--out-suffix``): :func:`slipcore_nb.whole_files.file_name`'s rule."""
    from .whole_files import file_name

    try:
        return file_name(text, "the name part")
    except ValueError as err:
        raise Refused(str(err)) from None


def folder(text: str) -> Path:
    """An existing folder (``~`` expanded)."""
    path = Path(text).expanduser()
    if not text or not path.is_dir():
        raise Refused(f"{text!r} is not a folder" + (" (it is a file)" if text and path.exists() else ""))
    return path


def out_folder(text: str) -> Path:
    """A folder to write into: one that exists, or a path with nothing there yet (``~`` expanded)."""
    path = Path(text).expanduser()
    if not text or (path.exists() and not path.is_dir()):
        raise Refused(f"{text!r} is a file, not a folder" if text else "'' names no folder")
    return path


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = count(1)(text)
    if value > 65535:
        raise Refused(f"{text!r} is out of range: a port is 1..65535")
    return value


def url(text: str) -> str:
    """An ``http://`` or ``https://`` address with a host (a server's base URL)."""
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        raise Refused(f"{text!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in text):
        raise Refused(f"{text!r} is not an http:// or https:// address with a host")
    return text


def name_and_path(text: str) -> tuple[str, str]:
    """``NAME=PATH`` with a non-empty name of letters, digits and ``_ . -`` and a non-empty path."""
    name, sep, path = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.strip():
        raise Refused(f"{text!r} is not NAME=PATH (a name of letters, digits and _ . -, then =, then a path)")
    return name, path


def notebook_prefix(text: str) -> str:
    """A prefix of at least one of the numbered notebooks (``01``, ``03_train``)."""
    from .artifacts import notebooks

    known = [nb.stem for nb in notebooks()]
    if not text or not any(name.startswith(text) for name in known):
        raise Refused(f"{text!r} starts no notebook's name; the notebooks are {', '.join(known)}")
    return text


def notebook_prefixes(text: str) -> list[str]:
    """Comma-separated :func:`notebook_prefix` values."""
    return [notebook_prefix(item.strip()) for item in text.split(",")]
