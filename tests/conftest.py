"""The quick tier: which tests are ``slow`` (``make check`` runs ``pytest -m "not slow"``).

A test is slow when it needs llama.cpp (a GGUF conversion or load, ``llama-server``, built on first
use), trains a model, starts a notebook kernel or drives a browser. Everything else is pure Python on
the tiny model and belongs in the quick tier, which must stay under two minutes on 2 cores.
``make test`` runs both tiers.

A test is marked slow here when it uses a fixture that builds or runs llama.cpp, a server or a
browser (:data:`SLOW_FIXTURES`), or when it is listed in :data:`SLOW` by file (``"*"``: the whole
file) because it does such work inline. A new slow test can instead carry ``@pytest.mark.slow``
itself. A name listed here that no longer exists in its file stops ``make check`` with the stale
entry named, so a renamed slow test cannot slip into the quick tier.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_FIXTURES = {"gguf", "ggufs", "exported", "modelfile", "admitted", "verdicts",  # a GGUF made and loaded
                 "server", "served",  # llama-server on loopback
                 "lab", "page"}  # JupyterLab and Chromium

SLOW: dict[str, set[str]] = {
    "test_distributed.py": {"test_two_cpu_processes_train_one_model_and_rank_0_saves_it"},
    "test_export.py": {"test_lora_gguf_applied_by_llama_cpp_equals_the_merged_model"},
    "test_llama_server.py": {"test_a_broken_model_file_fails_with_the_servers_own_words"},
    "test_native.py": {
        "test_nbval_fails_a_dead_kernels_cell_at_once",
        "test_the_runner_names_the_notebook_the_cell_and_its_last_output",
        "test_the_runner_lists_stderr_a_user_would_see_but_not_progress_bars",
    },
    "test_reliability.py": {"test_quick_reliability_writes_a_stamped_result"},
    "test_role_adapters.py": {"test_a_role_adapter_trains_on_its_role"},
    "test_training.py": {
        "test_short_training_lowers_the_loss_through_unsloth",
        "test_short_training_lowers_the_loss_with_plain_trl",
        "test_interrupted_run_resumes_from_its_checkpoint",
        "test_a_moved_slider_trains_a_fresh_run_and_the_same_settings_resume",
        "test_script_leaves_what_notebooks_04_and_05_read",
    },
}


def pytest_collection_modifyitems(config, items):
    modules = {}
    for item in items:
        path = Path(str(item.fspath))
        if path.parent != Path(__file__).parent:
            continue  # notebooks under nbval are make test's alone
        modules[path.name] = getattr(item, "module", None)
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        if {"*", name} & SLOW.get(path.name, set()) or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if "slow" in (config.getoption("markexpr") or ""):
        stale = sorted(f"{file}::{name}" for file, module in modules.items() if module is not None
                       for name in SLOW.get(file, set()) - {"*"} if not hasattr(module, name))
        if stale:
            raise pytest.UsageError(f"tests/conftest.py lists slow tests that no longer exist: {', '.join(stale)}")
