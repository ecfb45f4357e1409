"""Serving: Ollama when a server answers, llama.cpp otherwise, both from the same Modelfile.

No Ollama server exists on CI machines, so the fallback is what runs here; the Ollama round trip
runs wherever ``OLLAMA_HOST`` (or the default port) answers.
"""

import socket

import pytest

from slipcore_nb import export, serve
from slipcore_nb.export import ExportError
from slipcore_nb.grammar import nslip_gbnf
from slipcore_nb.prompts import PROMPT
from slipcore_nb.protocol import decode, encode
from slipcore_nb.tiny import build_tiny

INSTRUCTIONS = [
    "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.",
    "You are the coordinator agent (id B). Goal[Nj]: Simplify timeouts. Respond with one nSLIP message.",
    "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.",
]


@pytest.fixture(scope="module")
def modelfile(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    q4 = export.to_gguf(build_tiny(), out, types=("q4_k_m",), name="tiny")["q4_k_m"].path
    return export.write_modelfile(q4, model_name="slipcore-tiny-test").modelfile


@pytest.fixture
def closed_port_host(monkeypatch):
    """An OLLAMA_HOST where certainly nothing listens: a port the OS just handed out and took back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OLLAMA_HOST", host)
    return host


def test_modelfile_settings_reach_the_runtime(modelfile):
    spec = serve.read_modelfile(modelfile)
    assert spec.gguf.name == "tiny-Q4_K_M.gguf" and spec.gguf.is_file()
    assert spec.stops == PROMPT.stop_sequences("</s>") and spec.temperature == 0.0
    assert export.render_template(spec.template, INSTRUCTIONS[0]) == PROMPT.prompt(INSTRUCTIONS[0])


def test_without_a_server_llama_cpp_answers_and_says_why(modelfile, closed_port_host):
    up, why = serve.ollama_status()
    assert not up and closed_port_host in why
    answers = serve.answer(INSTRUCTIONS, modelfile)
    assert answers.runtime == "llama.cpp"
    assert "no Ollama server" in answers.reason and closed_port_host in answers.reason
    assert len(answers.texts) == len(INSTRUCTIONS) and answers.messages_per_second > 0
    assert answers.texts[0] == answers.texts[2]  # greedy: same prompt, same answer
    assert all(not any(stop in text for stop in serve.read_modelfile(modelfile).stops) for text in answers.texts)


def test_grammar_makes_even_a_random_model_speak_nslip(modelfile, closed_port_host):
    answers = serve.answer(INSTRUCTIONS, modelfile, grammar=nslip_gbnf())
    assert answers.runtime == "llama.cpp" and "grammar" in answers.reason
    for text in answers.texts:
        assert encode(decode(text)) == text


def test_runtime_choices_are_checked(modelfile, closed_port_host):
    with pytest.raises(ExportError, match="no Ollama server at .*start `ollama serve` or set OLLAMA_HOST"):
        serve.answer(INSTRUCTIONS, modelfile, runtime="ollama")
    with pytest.raises(ValueError, match="takes no GBNF grammar"):
        serve.answer(INSTRUCTIONS, modelfile, runtime="ollama", grammar=nslip_gbnf())
    with pytest.raises(ValueError, match="runtime must be one of"):
        serve.answer(INSTRUCTIONS, modelfile, runtime="vllm")
    forced = serve.answer(INSTRUCTIONS[:1], modelfile, runtime="llama.cpp")
    assert forced.runtime == "llama.cpp" and forced.reason == "llama.cpp was asked for"


def test_ollama_round_trip_where_a_server_answers(modelfile):
    up, why = serve.ollama_status()
    if not up:
        pytest.skip(why)
    answers = serve.answer(INSTRUCTIONS, modelfile, model_name="slipcore-tiny-test")
    assert answers.runtime == "ollama" and len(answers.texts) == len(INSTRUCTIONS)
    fallback = serve.answer(INSTRUCTIONS, modelfile, runtime="llama.cpp")
    assert answers.texts == fallback.texts  # same GGUF, template, stops and greedy decoding
