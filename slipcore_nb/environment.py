"""What this machine runs: the versions that matter for this stack, for the notebook's first check."""

from __future__ import annotations

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
