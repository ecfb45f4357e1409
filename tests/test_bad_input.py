"""Bad input gets a clear error naming what and where, and loses nothing (issue #38, data loss first).

Each writer is given something it must refuse after a good file is already there: the error names
the file, example or variable, and the good file is byte for byte what it was.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipcore_nb import artifacts, environment, training
from slipcore_nb.dataset import DatasetError, read_jsonl, write_jsonl

GOOD = {"role": "planner", "input": "You are a planner agent. Goal[1]: x. Respond with nSLIP.",
        "target": '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'}


@pytest.mark.parametrize("bad, says", [
    ({"role": "planner", "input": "x"}, "examples[1]: missing field 'target'"),
    ({**GOOD, "target": "@a4|f1|c1#"}, "examples[1]: field 'target' is not valid nSLIP"),
    ({**GOOD, "role": "tester"}, "examples[1]: field 'role' is 'tester'"),
    ({**GOOD, "input": 7}, "examples[1]: field 'input' must be a string"),
    ({**GOOD, "input": "half a surrogate \ud800"}, "UTF-8 cannot hold"),
    ("not a dict", "examples[1]: expected a JSON object (a dict), got str"),
])
def test_write_jsonl_refuses_a_bad_example_and_keeps_the_old_file(tmp_path, bad, says):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [GOOD, GOOD])
    before = path.read_bytes()
    with pytest.raises(DatasetError, match=str(path).replace(".", r"\.")) as err:
        write_jsonl(path, [GOOD, bad])
    assert says in str(err.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


@pytest.mark.parametrize("content, says", [
    (json.dumps(GOOD).encode() + b"\n" + b'{"role": "planner\xff"}\n', ":2: not UTF-8 (byte 0xff at column 18)"),
    (b"", ": no examples (an empty file)"),
])
def test_read_jsonl_names_file_and_line(tmp_path, content, says):
    path = tmp_path / "eval.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(str(path)) and says in str(err.value)


@pytest.mark.parametrize("name", [".", "..", "../..", "/", "a/../../b", "~", ".hidden", "org/m", "org_m", "x" * 3])
def test_a_run_folder_stays_under_the_checkpoints_root(tmp_path, name):
    folder = tmp_path / "checkpoints" / training.run_folder_name(name)
    assert folder.resolve().parent == (tmp_path / "checkpoints").resolve()


@given(st.text(min_size=1).filter(str.strip), st.text(min_size=1).filter(str.strip))
def test_run_folder_names_never_escape_and_never_collide(first, second):
    a, b = training.run_folder_name(first), training.run_folder_name(second)
    assert "/" not in a and a not in (".", "..") and (a == b) == (first == second)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_a_run_folder_needs_a_name(name):
    with pytest.raises(ValueError, match="a model name is needed"):
        training.run_folder_name(name)


def test_a_fresh_run_never_deletes_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "outputs"
    (mine / "gguf").mkdir(parents=True)
    (mine / "gguf" / "model.gguf").write_bytes(b"weights")
    config = training.TrainConfig(model="m", max_steps=1, learning_rate=1e-3, lora_rank=1, batch_size=1, grad_accum=1,
                                  save_steps=1, output_dir=mine)
    with pytest.raises(RuntimeError, match="not a run folder this project made"):
        training.start_run(config, [GOOD], fresh=True)
    assert (mine / "gguf" / "model.gguf").read_bytes() == b"weights"
    run = tmp_path / "run"
    first = training.start_run(training.TrainConfig(**{**vars(config), "output_dir": run}), [GOOD], fresh=True)
    (run / "checkpoint-1").mkdir()
    again = training.start_run(training.TrainConfig(**{**vars(config), "output_dir": run}), [GOOD], fresh=True)
    assert first.checkpoint is None and again.checkpoint is None and not (run / "checkpoint-1").exists()


@pytest.mark.parametrize("variable, raw, kwargs, says", [
    ("SLIPCORE_EVAL_LIMIT", "0", dict(minimum=1), "SLIPCORE_EVAL_LIMIT='0' is out of range: it must be at least 1"),
    ("SLIPCORE_MAX_STEPS", "-5", dict(minimum=1), "SLIPCORE_MAX_STEPS='-5' is out of range"),
    ("SLIPCORE_MAX_STEPS", "1.9", dict(minimum=1), "SLIPCORE_MAX_STEPS='1.9' is not a valid int"),
    ("SLIPCORE_LR", "5", dict(cast=float, minimum=1e-5, maximum=0.1), "at least 1e-05 and at most 0.1"),
    ("SLIPCORE_LR", "nan", dict(cast=float, minimum=1e-5, maximum=0.1), "SLIPCORE_LR='nan' is out of range"),
    ("SLIPCORE_LR", "inf", dict(cast=float), "a finite number"),
])
def test_a_setting_out_of_range_is_refused_by_name(monkeypatch, variable, raw, kwargs, says):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ValueError) as err:
        environment.env_number(variable, 1, **kwargs)
    assert says in str(err.value)


def test_the_output_folder_expands_home_and_refuses_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", "~/runs")
    assert artifacts.output_dir() == (tmp_path / "runs").resolve() and (tmp_path / "runs").is_dir()
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path / "afile"))
    with pytest.raises(NotADirectoryError, match="SLIPCORE_OUTPUT_DIR=.*is a file, not a folder"):
        artifacts.output_dir()


def test_a_damaged_artifact_names_its_path_and_the_notebook(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path))
    (tmp_path / "model.json").write_text('{"name": "tiny"')
    with pytest.raises(ValueError, match=r"model\.json is not valid JSON .*01_load"):
        artifacts.load_json("model.json")
    artifacts.save_json("model.json", {"name": "tiny"})
    with pytest.raises(TypeError):
        artifacts.save_json("model.json", {"name": "tiny", "loaded": object()})
    assert artifacts.load_json("model.json") == {"name": "tiny"}  # the failed save left the good file


def test_run_all_refuses_an_unknown_benchmark_and_writes_nothing(tmp_path):
    from benchmarks.common import REPO

    summary = REPO / "benchmarks" / "results" / "summary.md"
    before = summary.read_bytes() if summary.exists() else None
    done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--only", "bogus"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "argument --only: 'bogus' is not one of" in done.stderr
    assert (summary.read_bytes() if summary.exists() else None) == before


@pytest.mark.parametrize("gguf, adapter", [("./m\nSYSTEM pwned.gguf", None), ("./m.gguf", "./a\r.gguf")])
def test_a_modelfile_path_cannot_add_a_line(gguf, adapter):
    from slipcore_nb.export import ExportError
    from slipcore_nb.modelfile import modelfile_text

    with pytest.raises(ExportError, match="holds a line break"):
        modelfile_text(gguf, "</s>", adapter)


@pytest.mark.parametrize("text, says", [
    ("FROM ./m.gguf\nPARAMETER stop\nPARAMETER temperature 0\n", "line 2: PARAMETER needs a name, a space and a value"),
    ('FROM ./m.gguf\nTEMPLATE """x\nPARAMETER temperature 0\n', "line 2: a quoted value is never closed"),
    ("FROM ./m.gguf\n\nTEMPLATE: x\n", "line 3: 'TEMPLATE:' is not a command"),
])
def test_the_modelfile_reader_names_the_line(text, says):
    from slipcore_nb.export import ExportError
    from slipcore_nb.modelfile import parse_modelfile

    with pytest.raises(ExportError, match=re.escape(says)):
        parse_modelfile(text)


@pytest.mark.parametrize("template", ["A {{ .Prompt }} B", "A {{.Prompt}} B", "A {{- .Prompt -}} B"])
def test_every_go_spelling_of_the_prompt_is_filled_in(template):
    from slipcore_nb.modelfile import render_template

    assert render_template(template, "x\\1") == "A x\\1 B"


def test_a_template_without_the_prompt_is_refused():
    from slipcore_nb.export import ExportError
    from slipcore_nb.modelfile import render_template

    with pytest.raises(ExportError, match="has no"):
        render_template("### Instruction:\n{{ .Input }}", "x")


@pytest.mark.parametrize("prompt, stop, max_tokens, temperature, error, says", [
    ("P", "###", 8, 0.0, TypeError, "stop must be a list of strings"),
    ("P", ["#", 3], 8, 0.0, TypeError, "stop must be a list"),
    ("P", None, 0, 0.0, ValueError, "max_tokens must be a positive int"), ("P", None, True, 0.0, ValueError, "max_tokens"),
    (None, None, 8, 0.0, TypeError, "prompt must be non-empty text"), ("", None, 8, 0.0, TypeError, "prompt must be"),
    ("P", None, 8, -0.5, ValueError, "temperature must be a finite number"),
    ("P", None, 8, float("nan"), ValueError, "temperature"), ("P", None, 8, "0.7", ValueError, "temperature"),
])
def test_a_completion_request_refuses_what_the_server_would_misread(prompt, stop, max_tokens, temperature, error, says):
    from slipcore_nb.completions import CompletionsClient

    with CompletionsClient("http://127.0.0.1:9") as client, pytest.raises(error, match=says):
        client.request_body(prompt, stop=stop, max_tokens=max_tokens, temperature=temperature)


@pytest.mark.parametrize("eos", [None, 2])
def test_the_answer_never_trains_a_non_text_end_of_sequence(eos):
    from slipcore_nb.prompts import PROMPT

    with pytest.raises(ValueError, match="eos_token must be"):
        PROMPT.completion(GOOD["target"], eos)


@pytest.mark.parametrize("field, value", [
    ("max_steps", 0), ("max_steps", -5), ("max_steps", "300"), ("max_steps", 2.5), ("lora_rank", 0),
    ("learning_rate", 0), ("learning_rate", -1e-3), ("learning_rate", float("nan")), ("learning_rate", "2e-3"),
])
def test_a_training_setting_no_run_can_use_is_refused_by_name(field, value):
    from slipcore_nb import registry

    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        training.TrainConfig.from_spec(registry.get_spec("tiny"), output_dir="/tmp/unused", **{field: value})


@pytest.mark.parametrize("name", ["", "   ", " tiny", "tiny\n", "org/m\tx", None])
def test_a_model_name_that_is_no_model_is_refused_by_name(name):
    from slipcore_nb import registry

    with pytest.raises(ValueError, match="is neither one of"):
        registry.get_spec(name)
