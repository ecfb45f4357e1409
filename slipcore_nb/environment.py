"""What this machine runs and how it is told: versions for the notebook's first check, numeric settings."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "unsloth", "llama_cpp_python", "ollama")


def package_versions() -> dict[str, str]:
    """Installed version of each package in :data:`PACKAGES` ("missing" when absent)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def env_number(name: str, default: float, cast=int):
    """A number from the environment, or ``default``; a bad value names the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}; unset it or give a number") from None
