"""Properties behind issue #38: nothing lost, no run folder escapes, the codec is the grammar.

(a) Every writer the project has, given something it must refuse after a good file is there, leaves
    that file byte for byte and no temporary file beside it; and no module writes a file any other way.
(b) No model name makes a run folder outside the checkpoints root, or two names share one.
(c) ``decode`` (canonical form, ASCII) and the GBNF grammar give the same verdict on any text, checked
    with xgrammar's byte-level matcher (a wheel: no native build, no tokenizer, no model).
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from slipcore_nb import artifacts, dataset, grammar, training, whole_files
from slipcore_nb.protocol import (BASE62_DIGITS, Act, Frame, Message, NSlipError, Slot, decode, encode, is_valid)

REPO = Path(__file__).resolve().parent.parent
GOOD = {"role": "planner", "input": "You are a planner agent. Goal[1]: x. Respond with nSLIP.",
        "target": '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _left_alone(folder: Path, name: str, before: bytes) -> None:
    assert (folder / name).read_bytes() == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")] == []  # no temporary file left


# ---------------------------------------------------------------------------- (a) writers

BAD_ROWS = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["planner", "tester", ""]), "input": st.text(max_size=20)}),
    st.fixed_dictionaries({"role": st.just("planner"), "input": st.text(min_size=1, max_size=20),
                           "target": st.text(max_size=30).filter(lambda t: not is_valid(t))}),
    st.builds(lambda extra: {**GOOD, "extra": extra}, st.integers()),
    st.builds(lambda text: {**GOOD, "input": "x" + text}, st.text(alphabet="\ud800\udfff", min_size=1, max_size=3)),
    st.integers(), st.none(), st.text(max_size=5),
)


@FAST
@given(good=st.lists(st.just(GOOD), min_size=1, max_size=3), bad=BAD_ROWS, at=st.integers(0, 3))
def test_write_jsonl_refusing_a_row_leaves_the_old_file(tmp_path, good, bad, at):
    path = tmp_path / "train.jsonl"
    dataset.write_jsonl(path, good)
    before = path.read_bytes()
    rows = [*good]
    rows.insert(min(at, len(rows)), bad)
    with pytest.raises(dataset.DatasetError, match=re.escape(str(path))):
        dataset.write_jsonl(path, rows)
    _left_alone(tmp_path, "train.jsonl", before)


@FAST
@given(previous=st.binary(max_size=200), text=st.text(max_size=50),
       bad=st.text(alphabet="\ud800\udbff\udc00", min_size=1, max_size=3))
def test_whole_files_never_cuts_a_file_short(tmp_path, previous, text, bad):
    path = tmp_path / "f.txt"
    path.write_bytes(previous)
    with pytest.raises(UnicodeEncodeError):
        whole_files.write_text(path, text + bad)
    _left_alone(tmp_path, "f.txt", previous)


def test_a_write_that_fails_on_disk_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        whole_files.write_text(path, "new")
    _left_alone(tmp_path, "f.txt", b"old")


UNWRITABLE = st.one_of(st.builds(object), st.sets(st.integers(), max_size=2), st.binary(min_size=1, max_size=3),
                       st.builds(complex, st.floats(allow_nan=False), st.floats(allow_nan=False)))


@FAST
@given(value=UNWRITABLE, key=st.text(alphabet="abc", min_size=1, max_size=3))
def test_save_json_refusing_a_value_leaves_the_old_artifact(tmp_path, monkeypatch, value, key):
    monkeypatch.setenv("SLIPCORE_OUTPUT_DIR", str(tmp_path))
    artifacts.save_json("model.json", {"name": "tiny"})
    before = (tmp_path / "model.json").read_bytes()
    with pytest.raises((TypeError, ValueError)):
        artifacts.save_json("model.json", {"name": "tiny", key: value})
    with pytest.raises(ValueError, match="key 'name'"):
        artifacts.save_json("model.json", {key: "tiny"})
    _left_alone(tmp_path, "model.json", before)


@pytest.mark.parametrize("write, refuse, name", [
    (lambda d: grammar.write_gbnf(d / "nslip.gbnf"), lambda d: grammar.write_gbnf(d / "nslip.gbnf", max_int_digits=0),
     "nslip.gbnf"),
    (lambda d: dataset.write_jsonl(d / "eval.jsonl", [GOOD]), lambda d: dataset.write_jsonl(d / "eval.jsonl", []),
     "eval.jsonl"),
    (lambda d: _modelfile(d, "</s>"), lambda d: _modelfile(d, 'a"""b'), "Modelfile"),
    (lambda d: _results(d, "ok"), lambda d: _results(d, "bad \ud800"), "bench.json"),
    (lambda d: _results(d, "ok"), lambda d: _results(d, "bad \ud800"), "bench.md"),
])
def test_every_writer_leaves_the_old_file_when_it_refuses(tmp_path, write, refuse, name):
    write(tmp_path)
    before = (tmp_path / name).read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - each writer's own error; the point is the file after it
        refuse(tmp_path)
    _left_alone(tmp_path, name, before)


def _modelfile(folder: Path, eos: str):
    from slipcore_nb.modelfile import write_modelfile

    gguf = folder / "m.gguf"
    gguf.write_bytes(b"GGUF")
    return write_modelfile(gguf, eos=eos)


def _results(folder: Path, note: str):
    from benchmarks.common import write_results

    return write_results(folder, "bench", {"benchmark": "bench", "stamp": {"commit": "x"}, "note": note},
                         f"### table\n\n{note}\n\ndata sha256")


def test_start_run_refusing_its_examples_touches_no_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    config = training.TrainConfig(model="m", max_steps=1, learning_rate=1e-3, lora_rank=1, batch_size=1, grad_accum=1,
                                  save_steps=1, output_dir=run)
    for rows in ([], [{**GOOD, "target": "@"}], [{"role": "planner"}]):
        with pytest.raises(ValueError):
            training.start_run(config, rows, fresh=True)
        assert (run / "checkpoint-2").is_dir() and (run / "run.json").read_text() == "{}"


# Raw writes that are not a data file another step reads: logs streamed while a child runs, the child's own
# call/result pickles in a temporary folder, and files unpacked into a staging folder that is renamed whole.
RAW_WRITES_ALLOWED = {
    ("slipcore_nb/llama_server.py", "open"), ("slipcore_nb/native.py", "open"), ("slipcore_nb/native.py", "write_bytes"),
    ("slipcore_nb/export.py", "open"), ("slipcore_nb/export.py", "write_bytes"), ("slipcore_nb/tiny.py", "write_bytes"),
    ("slipcore_nb/tiny.py", "write_text"), ("scripts/gpu_bundle.py", "open"), ("slipcore_nb/whole_files.py", "fdopen"),
    ("slipcore_nb/llama_cpp_build.py", "write_bytes"),  # the sdist's files, unpacked into a staging folder
    ("slipcore_nb/colab_ollama.py", "open"),  # the Ollama server's log, appended while it runs
}


def _raw_writes(path: Path) -> set[tuple[str, str]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("write_text", "write_bytes") and not (isinstance(node.func, ast.Attribute)
                                                         and getattr(node.func.value, "id", "") == "whole_files"):
            found.add(name)
        if name in ("open", "fdopen") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and any(mode in str(node.args[1].value) for mode in "wax"):
            found.add(name)
    return found


def test_no_module_writes_a_data_file_around_whole_files():
    sources = [*sorted((REPO / "slipcore_nb").glob("*.py")), *sorted((REPO / "benchmarks").glob("*.py")),
               *sorted((REPO / "scripts").glob("*.py"))]
    raw = {(str(path.relative_to(REPO)), call) for path in sources for call in _raw_writes(path)}
    assert raw - RAW_WRITES_ALLOWED == set(), "write these through slipcore_nb.whole_files"


# ---------------------------------------------------------------------------- (b) run folders


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1).filter(str.strip))
def test_no_model_name_makes_a_run_folder_outside_the_root(name):
    root = Path("/srv/outputs/checkpoints")
    folder = root / training.run_folder_name(name)
    assert Path(os.path.normpath(folder)).parent == root
    assert folder.name not in ("", ".", "..") and "/" not in folder.name and "\x00" not in folder.name


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="./\\~ _-abAB%", min_size=1, max_size=8).filter(str.strip),
       st.text(alphabet="./\\~ _-abAB%", min_size=1, max_size=8).filter(str.strip))
def test_run_folders_of_path_like_names_never_collide(first, second):
    assume(first != second)
    assert training.run_folder_name(first) != training.run_folder_name(second)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=30).filter(lambda s: s == s.strip() and s.isprintable()))
def test_a_config_for_any_model_name_stays_under_its_root(tmp_path, name):
    from slipcore_nb import registry

    config = training.TrainConfig.from_spec(registry.get_spec(name), output_dir=tmp_path / "checkpoints")
    assert config.output_dir.resolve().parent == (tmp_path / "checkpoints").resolve()


# ---------------------------------------------------------------------------- (c) the codec is the grammar

WIRE = BASE62_DIGITS + '@#|"\\ \n\t\x00-.é'
_MATCHER = []


def admitted(text: str) -> bool:
    """xgrammar's verdict on the whole text (the tests of (c) skip where xgrammar is not installed)."""
    if not _MATCHER:
        xgrammar = pytest.importorskip("xgrammar")
        from xgrammar import testing

        compiled = xgrammar.Grammar.from_ebnf(grammar.nslip_gbnf(), root_rule_name=grammar.ROOT)
        _MATCHER.append(lambda text: testing._is_grammar_accept_string(compiled, text))
    return _MATCHER[0](text)


def canonical(text: str) -> bool:
    """What the grammar should admit: one message decode reads, written as encode writes it, in ASCII."""
    try:
        return text.isascii() and encode(decode(text)) == text
    except NSlipError:
        return False


values = st.one_of(st.integers(0, 62**11 - 1), st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                                                        max_size=12))


@st.composite
def messages(draw) -> Message:
    slots = draw(st.dictionaries(st.sampled_from(list(Slot)), values, max_size=4))
    return Message(conv=draw(st.integers(0, 62**11 - 1)), turn=draw(st.integers(0, 3844)), src=draw(st.integers(0, 61)),
                   dst=draw(st.integers(0, 61)), act=draw(st.sampled_from(list(Act))),
                   frame=draw(st.sampled_from(list(Frame))), slots=slots)


@st.composite
def near_misses(draw) -> str:
    text = encode(draw(messages()))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(WIRE))
        if edit == "insert":
            text = text[:at] + char + text[at:]
        elif at < len(text):
            text = text[:at] + ("" if edit == "delete" else char) + text[at + 1:]
    return text


@settings(max_examples=400, deadline=None)
@given(st.one_of(near_misses(), st.text(alphabet=WIRE, max_size=40)))
def test_decode_and_the_grammar_agree_on_any_text(text):
    assert admitted(text) == canonical(text), (text, admitted(text), canonical(text))


@settings(max_examples=150, deadline=None)
@given(messages())
def test_every_message_encode_writes_is_admitted(msg):
    assert admitted(encode(msg))


@pytest.mark.parametrize("digits", [11, 12])
def test_the_length_bounds_are_the_same_in_both(digits):
    text = "@a4|f1|c" + "1" * digits + "|S1|d0|T2#"
    assert admitted(text) == is_valid(text) == (digits <= 11)
    text = '@a4|f1|c1|S1|d0|T2|t"' + "x" * (digits + 53) + '"#'
    assert admitted(text) == is_valid(text) == (digits + 53 <= 64)


def test_json_is_what_a_dataset_line_holds():
    """The dataset's one check and the codec agree: a line write_jsonl writes, read_jsonl reads."""
    line = json.dumps(dataset.check_example(GOOD, "x"), ensure_ascii=False)
    assert dataset._validated(line, "x") == GOOD
