"""Every file the project reads, and every SLIPCORE_* variable, refuses bad content by name (issue #38).

Files: the JSONL splits (``file:line``), the JSON artifacts between notebooks (their path and the
notebook that rewrites them), a run folder's ``run.json``, a Modelfile (its path and line) and the
accelerate configs. Variables: each error names the variable and what it allows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slipcore_nb import artifacts, dataset, environment, loading, registry, training
from slipcore_nb.dataset import DatasetError

GOOD = {"role": "planner", "input": "You are a planner agent. Goal[1]: x. Respond with nSLIP.",
        "target": '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'}
LINE = json.dumps(GOOD).encode() + b"\n"

JSONL = [  # content, what follows "<path>:<line>: " (or "<path>: ")
    (LINE + b"{not json\n", r":2: not valid JSON \(Expecting property name"),
    (LINE + b"\n", r":2: not valid JSON \(an empty line"),
    (LINE + b"   \n" + LINE, r":2: not valid JSON \(an empty line"),
    (LINE + b"[1, 2]\n", r":2: expected a JSON object \(a dict\), got list"),
    (LINE + b'"text"\n', r":2: expected a JSON object \(a dict\), got str"),
    (LINE + b"null\n", r":2: expected a JSON object \(a dict\), got NoneType"),
    (b'{"role": "planner", "input": "x"}\n', r":1: missing field 'target'"),
    (json.dumps({**GOOD, "input": None}).encode() + b"\n", r":1: field 'input' must be a string, got NoneType"),
    (json.dumps({**GOOD, "role": 3}).encode() + b"\n", r":1: field 'role' must be a string, got int"),
    (json.dumps({**GOOD, "role": "tester"}).encode() + b"\n", r":1: field 'role' is 'tester'"),
    (json.dumps({**GOOD, "input": ""}).encode() + b"\n", r":1: field 'input' is blank"),
    (json.dumps({**GOOD, "target": "@a4|f1|c01|S1|d0|T2#"}).encode() + b"\n",
     r":1: field 'target' is not valid nSLIP \(position 8: leading zero"),
    (json.dumps({**GOOD, "id": 7}).encode() + b"\n", r":1: unknown field 'id'"),
    (b'{"role": "planner", "role": "critic", "input": "x", "target": "@a4|f1|c1|S1|d0|T2#"}\n',
     r":1: field 'role' given twice"),
    (LINE + LINE + b'{"role": "planner\xff"}\n', r":3: not UTF-8 \(byte 0xff at column 18\)"),
    (b"\xef\xbb\xbf" + LINE, r":1: not valid JSON \(Unexpected UTF-8 BOM"),
    (LINE[:-1] + b"\r\n" + b"{", r":2: not valid JSON"),
    (b"", r": no examples \(an empty file\)"),
]


@pytest.mark.parametrize("content, says", JSONL)
def test_a_bad_split_file_names_file_and_line(tmp_path, content, says):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        dataset.read_jsonl(path)
    assert re.match(re.escape(str(path)) + says, str(err.value)), str(err.value)


@pytest.mark.parametrize("content, says", JSONL[:6])
def test_load_or_build_reads_a_users_file_and_never_replaces_it(tmp_path, content, says):
    (tmp_path / "train.jsonl").write_bytes(content)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "train.jsonl")) + says):
        dataset.load_or_build(tmp_path)
    assert (tmp_path / "train.jsonl").read_bytes() == content


ARTIFACTS = [  # artifact, bytes on disk, what the message says after its path
    ("model.json", b'{"name": "tiny"', r" is not valid JSON .*run notebooks/01_load\.ipynb again"),
    ("model.json", b"\xff\xfe", r" is not valid JSON .*01_load"),
    ("model.json", b"", r" is not valid JSON"),
    ("model.json", b'["tiny"]', r": an artifact is a JSON object \(a dict\), got list"),
    ("model.json", b'{"reason": "x"}', r": key 'name' must be a non-empty str, got None \(notebooks after 01_load"),
    ("model.json", b'{"name": 7}', r": key 'name' must be a non-empty str, got 7"),
    ("model.json", b'{"name": ""}', r": key 'name' must be a non-empty str"),
    ("export.json", b'{"model": "tiny"}', r": key 'merged' must be a non-empty str, got None \(notebooks after 04_export"),
    ("train_metrics.json", b'{"eval_split": "eval_unseen"}', r": key 'eval_examples' must be a non-empty int"),
    ("train_metrics.json", b'{"eval_split": "eval_unseen", "eval_examples": true}', r": key 'eval_examples'"),
    ("serve_metrics.json", b"{", r" is not valid JSON .*05_ollama_test"),
]


@pytest.mark.parametrize("name, content, says", ARTIFACTS)
def test_a_damaged_artifact_names_its_path_and_notebook(monkeypatch, tmp_path, name, content, says):
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path))
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as err:
        artifacts.load_json(name)
    assert re.match(re.escape(str(tmp_path / name)) + says, str(err.value)), str(err.value)


def test_an_artifact_that_is_a_folder_or_missing_names_the_notebook(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path))
    with pytest.raises(artifacts.MissingArtifact, match=r"model\.json is missing: run notebooks/01_load\.ipynb first"):
        artifacts.load_json("model.json")
    (tmp_path / "model.json").mkdir()
    with pytest.raises(ValueError, match=r"model\.json is a folder, not a JSON file: run notebooks/01_load"):
        artifacts.load_json("model.json")


@pytest.mark.parametrize("content, says", [
    (b"{", r"run\.json is damaged .*fresh=True"),
    (b"\xff", r"run\.json is damaged"),
    (b"[]", r"run\.json holds a list, not the run's settings"),
])
def test_a_damaged_run_record_names_its_path_and_keeps_the_checkpoints(tmp_path, content, says):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "run.json").write_bytes(content)
    config = training.TrainConfig(model="m", max_steps=1, learning_rate=1e-3, lora_rank=1, batch_size=1, grad_accum=1,
                                  save_steps=1, output_dir=run)
    with pytest.raises(ValueError, match=says):
        training.start_run(config, [GOOD])
    assert (run / "checkpoint-1").is_dir() and (run / "run.json").read_bytes() == content
    assert training.start_run(config, [GOOD], fresh=True).checkpoint is None  # what the message offers works


MODELFILES = [  # Modelfile text, what the message says after "<path>: "
    ("FROM ./m.gguf\nPARAMETER stop\nPARAMETER temperature 0\n", r"Modelfile line 2: PARAMETER needs a name"),
    ('FROM ./m.gguf\nTEMPLATE """x\nPARAMETER temperature 0\n', r"Modelfile line 2: a quoted value is never closed"),
    ("FROM ./m.gguf\n\nTEMPLATE: x\n", r"Modelfile line 3: 'TEMPLATE:' is not a command"),
    ('FROM ./m.gguf\nTEMPLATE "{{ .Input }}"\n', r"the TEMPLATE '\{\{ \.Input \}\}' has no \{\{ \.Prompt \}\}"),
    ('FROM ./m.gguf\nTEMPLATE "{{ .Prompt }}"\nPARAMETER temperature hot\n', r"PARAMETER temperature 'hot' is not a number"),
    ('FROM ./m.gguf\nTEMPLATE "{{ .Prompt }}"\nPARAMETER temperature -1\n', r"PARAMETER temperature '-1'"),
    ('FROM ./m.gguf\nTEMPLATE "{{ .Prompt }}"\nPARAMETER temperature nan\n', r"PARAMETER temperature 'nan'"),
]


@pytest.mark.parametrize("text, says", MODELFILES)
def test_a_bad_modelfile_names_its_path_and_line(tmp_path, text, says):
    from slipcore_nb.answering import AnswerError, read_modelfile

    path = tmp_path / "Modelfile"
    path.write_text(text)
    with pytest.raises(AnswerError) as err:
        read_modelfile(path)
    assert re.match(re.escape(str(path)) + ": " + says, str(err.value)), str(err.value)


@pytest.mark.parametrize("content, says", [
    (b"FROM ./m.gguf\n\xff\n", r": not UTF-8 text \(byte 0xff at offset 14\)"),
    (b"PARAMETER temperature 0\n", r" needs FROM and TEMPLATE lines"),
])
def test_a_modelfile_that_is_not_one_names_its_path(tmp_path, content, says):
    from slipcore_nb.answering import AnswerError, read_modelfile

    path = tmp_path / "Modelfile"
    path.write_bytes(content)
    with pytest.raises(AnswerError, match=re.escape(str(path)) + says):
        read_modelfile(path)


def test_every_accelerate_config_is_a_mapping_the_launcher_reads():
    yaml = pytest.importorskip("yaml")
    configs = sorted((Path(__file__).resolve().parent.parent / "configs" / "accelerate").glob("*.yaml"))
    assert configs
    for path in configs:
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data.get("num_processes", 1) >= 1, path


# ---------------------------------------------------------------------------- SLIPCORE_* variables


def _sliders():
    from slipcore_nb import widgets

    return widgets.training_sliders(100, 16, 1e-3)


ENV = [  # variable, value, the call that reads it, error, what the message says
    ("SLIPCORE_MAX_STEPS", "0", _sliders, ValueError, r"SLIPCORE_MAX_STEPS='0' is out of range: it must be at least 1"),
    ("SLIPCORE_MAX_STEPS", "-5", _sliders, ValueError, r"SLIPCORE_MAX_STEPS='-5' is out of range"),
    ("SLIPCORE_MAX_STEPS", "1.5", _sliders, ValueError, r"SLIPCORE_MAX_STEPS='1\.5' is not a valid int"),
    ("SLIPCORE_MAX_STEPS", "ten", _sliders, ValueError, r"SLIPCORE_MAX_STEPS='ten' is not a valid int"),
    ("SLIPCORE_LORA_RANK", "0", _sliders, ValueError, r"SLIPCORE_LORA_RANK='0' is out of range"),
    ("SLIPCORE_LORA_RANK", "16.0", _sliders, ValueError, r"SLIPCORE_LORA_RANK='16\.0' is not a valid int"),
    ("SLIPCORE_LR", "5", _sliders, ValueError, r"SLIPCORE_LR='5' is out of range: it must be at least 1e-05 and at most 0\.1"),
    ("SLIPCORE_LR", "0", _sliders, ValueError, r"SLIPCORE_LR='0' is out of range"),
    ("SLIPCORE_LR", "-1e-3", _sliders, ValueError, r"SLIPCORE_LR='-1e-3' is out of range"),
    ("SLIPCORE_LR", "nan", _sliders, ValueError, r"SLIPCORE_LR='nan' is out of range"),
    ("SLIPCORE_LR", "fast", _sliders, ValueError, r"SLIPCORE_LR='fast' is not a valid float"),
    ("SLIPCORE_EVAL_LIMIT", "0", lambda: environment.env_number("SLIPCORE_EVAL_LIMIT", None, minimum=1), ValueError,
     r"SLIPCORE_EVAL_LIMIT='0' is out of range: it must be at least 1"),
    ("SLIPCORE_EVAL_LIMIT", "all", lambda: environment.env_number("SLIPCORE_EVAL_LIMIT", None, minimum=1), ValueError,
     r"SLIPCORE_EVAL_LIMIT='all' is not a valid int"),
    ("SLIPCORE_MODEL", " tiny", lambda: registry.choose_model(), ValueError, r"model name ' tiny' \(SLIPCORE_MODEL"),
    ("SLIPCORE_MODEL", "tiny\n", lambda: registry.choose_model(), ValueError, r"\(SLIPCORE_MODEL or --model\)"),
    ("SLIPCORE_MODEL", "   ", lambda: registry.choose_model(), ValueError, r"\(SLIPCORE_MODEL or --model\)"),
    ("SLIPCORE_BACKEND", "torch", lambda: loading.load_model("tiny"), ValueError,
     r"backend must be one of \('unsloth', 'transformers'\), got 'torch' \(check SLIPCORE_BACKEND\)"),
    ("SLIPCORE_BACKEND", "Unsloth", lambda: loading.load_model("tiny"), ValueError, r"check SLIPCORE_BACKEND"),
    ("SLIPCORE_OUTPUT_DIR", "{file}", artifacts.output_dir, NotADirectoryError,
     r"SLIPCORE_OUTPUT_DIR='.*afile': .* is a file, not a folder"),
    ("SLIPCORE_OUTPUT_DIR", "{file}/below", artifacts.output_dir, NotADirectoryError, r"SLIPCORE_OUTPUT_DIR="),
    ("SLIPCORE_SCRATCH", "{file}", artifacts.scratch_dir, NotADirectoryError, r"SLIPCORE_SCRATCH='.*afile': .* is a file"),
    ("SLIPCORE_CACHE", "{file}", artifacts.cache_root, NotADirectoryError, r"SLIPCORE_CACHE='.*afile': .* is a file"),
    ("SLIPCORE_CACHE", "{file}/models", artifacts.cache_root, NotADirectoryError, r"SLIPCORE_CACHE="),
]


@pytest.mark.parametrize("variable, value, call, error, says", ENV)
def test_a_bad_variable_is_refused_by_name(monkeypatch, tmp_path, variable, value, call, error, says):
    if call is _sliders:
        pytest.importorskip("ipywidgets")
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(variable, value.format(file=tmp_path / "afile"))
    with pytest.raises(error) as err:
        call()
    assert re.search(says, str(err.value)), str(err.value)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("value", ["gpu", "CPU", "cuda "])
def test_the_llama_cpp_build_variable_is_cuda_or_cpu(value):
    from slipcore_nb import colab_packages

    with pytest.raises(ValueError, match=rf"SLIPCORE_LLAMA_CPP={value!r}: it must be 'cuda' or 'cpu'"):
        colab_packages.plan("04_export", pins={}, installed=lambda name: None, arch="sm_75", cuda_release=None,
                            model="tiny", cache=Path("/nonexistent"), env={"SLIPCORE_LLAMA_CPP": value})


@pytest.mark.parametrize("variable", ["SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "SLIPCORE_SCRATCH"])
def test_a_folder_variable_expands_home(monkeypatch, tmp_path, variable):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(variable, "~/here")
    found = {"SLIPCORE_OUTPUT_DIR": artifacts.output_dir, "SLIPCORE_CACHE": artifacts.cache_root,
             "SLIPCORE_SCRATCH": artifacts.scratch_dir}[variable]()
    assert found == (tmp_path / "here").resolve() and found.is_dir()
