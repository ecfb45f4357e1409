"""Where outputs go on Colab, offline: Drive accepted, Drive declined, a refused mount.

Nobody here can open Colab, so these pin down what could go wrong there by construction: outputs that
would not survive to the next notebook's machine, and a Drive refusal that leaves the user guessing.
"""

from __future__ import annotations

import sys

from slipcore_nb import colab_storage


def test_drive_accepted_puts_outputs_caches_and_hub_cache_on_drive():
    env = colab_storage.storage_env(True)
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE"):
        assert env[key].startswith("/content/drive/MyDrive/slipcore/"), key
    assert env["SLIPCORE_SCRATCH"].startswith("/content/") and "drive" not in env["SLIPCORE_SCRATCH"]
    assert env["UNSLOTH_AUTO_INSTALL"] == "0"


def test_drive_declined_falls_back_to_local_disk_with_one_explanation():
    env = colab_storage.storage_env(False)
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE"):
        assert env[key].startswith("/content/slipcore-outputs/"), key
    message = colab_storage.no_drive_message("MessageError: credential propagation was unsuccessful")
    assert "credential propagation" in message and "/content/slipcore-outputs" in message
    assert "new machine" in message and "rerun this cell" in message


def test_a_refused_mount_is_reported_not_raised(monkeypatch, tmp_path):
    import types

    class MessageError(Exception):
        pass

    def refuse(mountpoint, **kwargs):
        raise MessageError("Error: credential propagation was unsuccessful")

    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.drive = types.SimpleNamespace(mount=refuse)
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    mounted, why = colab_storage.mount_drive(tmp_path / "drive")
    assert not mounted and "credential propagation" in why
