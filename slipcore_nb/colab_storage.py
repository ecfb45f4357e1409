"""Google Colab only: where a notebook's outputs and caches live, on Google Drive or this machine.

Why this exists: each notebook opened from its Colab badge runs on a new machine, so what one notebook
writes must go where the next notebook's machine finds it: Google Drive when the user allows it, else
this machine's disk with one message saying what that means. The paths and environment are decided
here, apart from what gets installed (:mod:`slipcore_nb.colab_packages`) and from the first cell's
setup (:mod:`slipcore_nb.colab`), which mounts Drive and flushes it at the end. Tested offline in
``tests/test_colab_storage.py``.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

from pathlib import Path

DRIVE_MOUNT = Path("/content/drive")
DRIVE_ROOT = DRIVE_MOUNT / "MyDrive" / "slipcore"  # survives from one notebook's machine to the next
LOCAL_ROOT = Path("/content/slipcore-outputs")  # without Drive: this machine only
SCRATCH = Path("/content/slipcore-scratch")  # big files that need not survive (16-bit merge, f16 GGUF)


def storage_env(drive: bool) -> dict[str, str]:
    """Where artifacts, our cache and the Hugging Face hub cache live, as environment variables.
    Set before anything imports huggingface_hub, which reads HF_HUB_CACHE once, at import."""
    root = DRIVE_ROOT if drive else LOCAL_ROOT
    return {
        "SLIPCORE_OUTPUT_DIR": str(root / "outputs"),
        "SLIPCORE_CACHE": str(root / "cache"),
        "HF_HUB_CACHE": str(root / "huggingface" / "hub"),
        "SLIPCORE_SCRATCH": str(SCRATCH),
        "UNSLOTH_AUTO_INSTALL": "0",  # Unsloth's GGUF save would otherwise apt-get and git clone
        "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",  # Drive has no symlinks; the hub copes, quietly
    }


def no_drive_message(reason: str) -> str:
    return (f"Google Drive is not mounted ({reason}), so outputs stay on this machine in {LOCAL_ROOT}. "
            "Each notebook opened from its badge gets a new machine: the next notebook will not find what "
            "this one writes and will ask you to run it again. To keep them, rerun this cell and allow "
            "Drive access (files go to MyDrive/slipcore).")


def mount_drive(mountpoint: Path = DRIVE_MOUNT) -> tuple[bool, str]:
    """(mounted, why not). Colab asks the user; declining or closing the popup raises in ``mount``."""
    if (mountpoint / "MyDrive").is_dir():
        return True, "already mounted"
    try:
        from google.colab import drive

        drive.mount(str(mountpoint))
    except Exception as error:  # MessageError "credential propagation was unsuccessful", timeouts, ...
        return False, f"{type(error).__name__}: {error}".strip()
    mounted = (mountpoint / "MyDrive").is_dir()
    return mounted, "mounted" if mounted else "no MyDrive folder after mounting"
