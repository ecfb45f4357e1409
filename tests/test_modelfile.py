"""The Modelfile asks the served model exactly what training showed it: template and stops from PROMPT.

Values are read back with ``parse_modelfile``, which follows Ollama's own parser (no escapes; a
newline inside a value needs triple quotes), and the template is rendered the way Ollama renders
``{{ .Prompt }}``; the result must equal ``PROMPT.prompt`` byte for byte.
"""

import pytest

from slipcore_nb.export import ExportError
from slipcore_nb.modelfile import _modelfile_quote, modelfile_text, parse_modelfile, render_template, write_modelfile
from slipcore_nb.prompts import PROMPT
from slipcore_nb.answering import AnswerError, read_modelfile

INSTRUCTIONS = [
    "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.",
    'You are the critic agent (id K). Incoming report:\n@a1|f2|cp|SG|d2|T3|t"exec_failed"#\nEvaluate.',
    'tricky: """ {{ .System }} "quoted" \\ back\\slash \t tab',
    "",
]


@pytest.fixture
def recipe(tmp_path):
    gguf = tmp_path / "slipcore-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")  # write_modelfile only needs the file to exist when eos is given
    return write_modelfile(gguf, model_name="slipcore-test", eos="</s>")


def test_template_renders_to_the_training_prompt_byte_for_byte(recipe):
    template = dict(parse_modelfile(recipe.modelfile.read_text()))["template"]
    assert template == PROMPT.ollama_template()
    for instruction in INSTRUCTIONS:
        assert render_template(template, instruction).encode() == PROMPT.prompt(instruction).encode()


def test_stops_and_temperature_come_from_the_prompt_format(recipe):
    commands = parse_modelfile(recipe.modelfile.read_text())
    assert [value for name, value in commands if name == "stop"] == PROMPT.stop_sequences("</s>")
    assert "\n" in PROMPT.stop_sequences("</s>")  # the newline stop survives the Modelfile
    assert dict(commands)["temperature"] == "0"


def test_from_is_relative_to_the_modelfile_and_resolves_to_the_gguf(recipe):
    assert dict(parse_modelfile(recipe.modelfile.read_text()))["from"] == "./slipcore-Q4_K_M.gguf"
    spec = read_modelfile(recipe.modelfile)
    assert spec.gguf == recipe.modelfile.parent / "slipcore-Q4_K_M.gguf"
    assert spec.adapter is None
    assert spec.stops == PROMPT.stop_sequences("</s>") and spec.temperature == 0.0


def test_adapter_route_writes_an_adapter_line(tmp_path):
    base, lora = tmp_path / "base-F16.gguf", tmp_path / "slipcore-lora-F16.gguf"
    base.write_bytes(b"GGUF")
    lora.write_bytes(b"GGUF")
    recipe = write_modelfile(base, adapter_path=lora, eos="<|im_end|>")
    spec = read_modelfile(recipe.modelfile)
    assert (spec.gguf, spec.adapter) == (base, lora)
    assert spec.stops[0] == "<|im_end|>"


def test_commands_for_the_user(recipe):
    assert recipe.create_command == f"ollama create slipcore-test -f {recipe.modelfile}"
    assert recipe.run_command.startswith("ollama run slipcore-test 'You are the planner agent")


def test_parser_keeps_backslashes_like_ollama():
    # The seed guide wrote TEMPLATE "...\n..." on one line: Ollama keeps the backslash-n literally.
    guide = 'FROM ./m.gguf\nTEMPLATE "### Instruction:\\n{{ .Prompt }}\\n\\n### Response:\\n"\nPARAMETER stop "###"\n'
    template = dict(parse_modelfile(guide))["template"]
    assert "\\n" in template and "\n" not in template
    assert render_template(template, "x") != PROMPT.prompt("x")


@pytest.mark.parametrize("value", ["###", "\n", "</s>", '"', 'say "hi"', " lead", "a\nb\n", "\\n"])
def test_quoted_values_read_back_unchanged(value):
    text = f"FROM ./m.gguf\nPARAMETER stop {_modelfile_quote(value)}\n# a comment\nPARAMETER temperature 0\n"
    assert parse_modelfile(text) == [("from", "./m.gguf"), ("stop", value), ("temperature", "0")]


def test_values_a_modelfile_cannot_express_are_refused():
    with pytest.raises(ExportError, match="triple quotes"):
        _modelfile_quote('a """ b')


def test_modelfile_text_has_no_hand_typed_prompt():
    text = modelfile_text("./m.gguf", "</s>")
    assert f'TEMPLATE """{PROMPT.ollama_template()}"""' in text
    assert text.startswith("FROM ./m.gguf\n") and text.endswith("PARAMETER temperature 0\n")


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(ExportError, match="no GGUF file .* run to_gguf first"):
        write_modelfile(tmp_path / "absent.gguf", eos="</s>")
    with pytest.raises(AnswerError, match="no Modelfile .*write_modelfile"):
        read_modelfile(tmp_path / "Modelfile")


def test_a_modelfile_in_a_subfolder_points_up_to_the_gguf(recipe):
    """04 writes one Modelfile per GGUF type in gguf/ollama-<type>/: the gguf/ folder stays portable."""
    gguf = recipe.modelfile.parent / "slipcore-Q4_K_M.gguf"
    nested = write_modelfile(gguf, out_dir=gguf.parent / "ollama-q4_k_m", eos="</s>")
    assert dict(parse_modelfile(nested.modelfile.read_text()))["from"] == "../slipcore-Q4_K_M.gguf"
    assert read_modelfile(nested.modelfile).gguf == gguf
