"""What this machine runs and how it is told: versions for the notebook's first check, numeric settings."""

from __future__ import annotations

import math
import os
import platform
from importlib import metadata

PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "unsloth", "llama_cpp_python", "ollama")
# The tested torch. Not in requirements.txt, so that a CUDA machine's pip picks a CUDA build: `make venv`
# (which reads it from here) pins it only where there is no CUDA, to the CPU wheel.
TORCH_VERSION = "2.13.0"


def package_versions() -> dict[str, str]:
    """Installed version of each package in :data:`PACKAGES` ("missing" when absent)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def env_number(name: str, default: float, cast=int, minimum: float | None = None, maximum: float | None = None):
    """A number from the environment, or ``default``; a value that is not a ``cast`` number, or lies
    outside ``minimum``..``maximum``, raises an error naming the variable and what it allows."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    allowed = ("" if minimum is None else f"at least {minimum}") + (" and " if None not in (minimum, maximum) else "") + (
        "" if maximum is None else f"at most {maximum}")
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}; unset it or give a number"
                         + (f" ({allowed})" if allowed else "")) from None
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={raw!r} is out of range: it must be {allowed or 'a finite number'}")
    return value
