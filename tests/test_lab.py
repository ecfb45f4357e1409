"""The notebooks in a real JupyterLab, driven by a real browser: 01 and 03 on the tiny model, a slider moved.

Playwright drives Debian's headless ``chromium`` (no browser download) against ``jupyter lab`` from the
project's venv on loopback, in a copy of the notebooks (JupyterLab saves what it runs). 03 runs once at
the slider's start value, then the steps slider is moved down with the keyboard and training runs again:
the run must be a fresh one with the moved value (resuming the first run's last checkpoint would train nothing).

Without chromium the test is skipped with the install command, except where ``SLIPCORE_REQUIRE_BROWSER``
is set (``.ci/run`` installs chromium and sets it), so CI cannot pass by skipping it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from slipcore_nb.llama_server import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
START_STEPS, MOVED = 6, 4  # fewer steps: resuming checkpoint-6 would train nothing

if CHROMIUM is None and not os.environ.get("SLIPCORE_REQUIRE_BROWSER"):
    pytest.skip("no chromium: `sudo apt-get install chromium` runs the browser test", allow_module_level=True)


def _wait(condition, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback over a copy of the notebooks; yields (base url, token, output folder)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Render every cell (JupyterLab 4 leaves off-screen cells out of the page by default).
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token, out = free_port(), secrets.token_hex(16), root / "outputs"
    env = {**os.environ, "SLIPCORE_MODEL": "tiny", "SLIPCORE_OUTPUT_DIR": str(out), "SLIPCORE_EVAL_LIMIT": "4",
           "SLIPCORE_MAX_STEPS": str(START_STEPS), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                return True
        except OSError:
            return server.poll() is not None and pytest.fail(f"jupyter lab exited: {(root / 'lab.log').read_text()[-2000:]}")

    try:
        _wait(answers, 120, "jupyter lab to answer")
        yield url, token, out
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser.new_page(viewport={"width": 1400, "height": 1000})
        browser.close()


def _api(url: str, token: str, path: str):
    with urllib.request.urlopen(f"{url}/api/{path}?token={token}", timeout=5) as reply:
        return json.load(reply)


def _kernels_idle(url: str, token: str) -> bool:
    kernels = _api(url, token, "kernels")
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


def _run(page, url: str, token: str, menu_item: str, done, timeout: float, what: str):
    """Run cells of the open notebook from the Run menu, then wait until ``done()`` holds, no cell is queued and the
    kernel is idle (between two queued cells the kernel reports idle for a moment, so idle alone is not the end)."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=menu_item).first.click()

    def finished():
        if page.locator(".jp-OutputArea-output", has_text="Traceback").count():
            raise AssertionError(f"{what}: a cell failed:\n" + page.locator(
                ".jp-OutputArea-output", has_text="Traceback").first.inner_text()[-3000:])
        queued = page.locator(".jp-InputPrompt", has_text="[*]").count()
        return done() and not queued and _kernels_idle(url, token)

    _wait(finished, timeout, f"{what}: every cell run, none queued", poll=2.0)


def _open(page, url: str, token: str, notebook: str):
    """Open ``notebook`` alone (``reset``: no notebook restored from the last page) and wait for its kernel."""
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}")
    panel = page.locator(".jp-NotebookPanel:visible", has_text=f"{notebook[:2]} · ")  # its title, e.g. "03 · Train"
    panel.first.wait_for(timeout=60_000)
    assert page.locator(".jp-NotebookPanel:visible").count() == 1, "another notebook is open beside it"
    panel.first.locator(".jp-Cell").first.click()  # focus: the Run menu acts on this notebook
    _wait(lambda: any(session["path"].endswith(notebook) and session["kernel"]["execution_state"] == "idle"
                      for session in _api(url, token, "sessions")), 120, f"the kernel of {notebook}")


def test_notebooks_01_and_03_run_in_jupyterlab_and_a_moved_slider_trains_a_fresh_run(lab, page):
    url, token, out = lab
    _open(page, url, token, "01_load.ipynb")
    _run(page, url, token, "Run All Cells", lambda: (out / "model.json").exists(), 600, "01_load")
    assert json.loads((out / "model.json").read_text())["name"] == "tiny"

    metrics = out / "train_metrics.json"
    _open(page, url, token, "03_train.ipynb")
    _run(page, url, token, "Run All Cells", metrics.exists, 900, "03_train at the slider's start")
    first = json.loads(metrics.read_text())
    assert first["max_steps"] == first["steps"] == START_STEPS

    slider = page.locator(".widget-slider", has_text="max steps").locator(".noUi-handle").first
    slider.focus()
    for _ in range(START_STEPS - MOVED):
        slider.press("ArrowLeft")
    readout = page.locator(".widget-slider", has_text="max steps").locator(".widget-readout").first
    assert readout.inner_text().strip() == str(MOVED)

    # Run again from the cell that reads the sliders, as a user would after moving one.
    page.locator(".jp-Cell", has_text="settings = sliders.values()").first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Escape")
    _run(page, url, token, "Run Selected Cell and All Below",
         lambda: json.loads(metrics.read_text())["max_steps"] == MOVED, 900, "03_train after moving the slider")
    second = json.loads(metrics.read_text())
    assert second["steps"] == MOVED, "the moved slider must train a fresh run of the moved length"
    assert [step for step, _ in second["loss_history"]] == list(range(1, MOVED + 1))
    assert page.locator(".jp-OutputArea-output", has_text=f"max_steps {START_STEPS} -> {MOVED}").count() == 1
