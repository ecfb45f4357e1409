"""Serving: Ollama when a server answers, llama.cpp otherwise, both from the same Modelfile.

No Ollama server exists on CI machines, so the fallback is what runs here; the Ollama round trip
runs wherever ``OLLAMA_HOST`` (or the default port) answers. llama.cpp always runs in a child process.
"""

import contextlib
import io
import re

import pytest

from slipcore_nb import answering, export
from slipcore_nb.modelfile import render_template, write_modelfile
from slipcore_nb.grammar import nslip_gbnf
from slipcore_nb.llama_server import free_port
from slipcore_nb.native import run_in_child
from slipcore_nb.prompts import PROMPT
from slipcore_nb.protocol import decode, encode
from slipcore_nb.tiny import build_tiny

INSTRUCTIONS = [
    "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.",
    "You are the coordinator agent (id B). Goal[Nj]: Simplify timeouts. Respond with one nSLIP message.",
    "You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.",
]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    return export.to_gguf(build_tiny(), tmp_path_factory.mktemp("serve"), types=("q8_0", "q4_k_m"), name="tiny")


@pytest.fixture(scope="module")
def modelfile(ggufs):
    return write_modelfile(ggufs["q4_k_m"].path, model_name="slipcore-tiny-test").modelfile


def _load_log(gguf, extra_cpu_buffers: bool) -> str:
    """llama.cpp's own log of loading ``gguf`` through answering.load_llama (runs in a child process).

    Only a load, no decoding: with extra buffers that is where an AMX Xeon crashed.
    """
    import llama_cpp

    log = io.StringIO()
    with contextlib.redirect_stderr(log):  # llama-cpp-python prints llama.cpp's log to sys.stderr
        answering.load_llama(gguf, n_ctx=256, verbose=True, extra_cpu_buffers=extra_cpu_buffers).close()
    return log.getvalue() + "\nsystem info: " + llama_cpp.llama_print_system_info().decode()


def model_buffers(log: str) -> set[str]:
    """The buffer types llama.cpp put the weights in: ``load_tensors: CPU_REPACK model buffer size = ...``."""
    return set(re.findall(r"load_tensors:\s+(\S+) model buffer size", log))


@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m"])
def test_weights_stay_in_plain_cpu_buffers_on_any_cpu(ggufs, kind):
    """The AMX/repack code paths that crashed on an Intel Xeon never run: by construction, on any CPU.

    llama.cpp names the buffer type of every weight it loads; plain host memory is CPU or CPU_Mapped,
    the repacked ones are CPU_REPACK and AMX. What it reports is what its matrix kernels will read.
    """
    gguf = ggufs[kind].path
    log = run_in_child(_load_log, gguf, False, what=f"llama.cpp loading {gguf.name}")
    buffers = model_buffers(log)
    assert buffers and buffers <= {"CPU", "CPU_Mapped"}, log


def test_the_default_would_repack_on_this_cpu(ggufs):
    """The control: with llama.cpp's default the same Q4_K_M weights leave plain buffers (REPACK on
    AVX2 CPUs, AMX on Intel Xeons that have it), so the test above can fail."""
    gguf = ggufs["q4_k_m"].path
    log = run_in_child(_load_log, gguf, True, what=f"llama.cpp loading {gguf.name} with extra buffers")
    assert model_buffers(log) - {"CPU", "CPU_Mapped"}, log


@pytest.fixture
def closed_port_host(monkeypatch):
    """An OLLAMA_HOST where certainly nothing listens: a port the OS just handed out and took back."""
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OLLAMA_HOST", host)
    return host


def test_modelfile_settings_reach_the_runtime(modelfile):
    spec = answering.read_modelfile(modelfile)
    assert spec.gguf.name == "tiny-Q4_K_M.gguf" and spec.gguf.is_file()
    assert spec.stops == PROMPT.stop_sequences("</s>") and spec.temperature == 0.0
    assert render_template(spec.template, INSTRUCTIONS[0]) == PROMPT.prompt(INSTRUCTIONS[0])


def test_without_a_server_llama_cpp_answers_and_says_why(modelfile, closed_port_host):
    up, why = answering.ollama_status()
    assert not up and closed_port_host in why
    answers = answering.answer(INSTRUCTIONS, modelfile)
    assert answers.runtime == "llama.cpp"
    assert "no Ollama server" in answers.reason and closed_port_host in answers.reason
    assert len(answers.texts) == len(INSTRUCTIONS) and answers.messages_per_second > 0
    assert answers.texts[0] == answers.texts[2]  # greedy: same prompt, same answer
    assert all(not any(stop in text for stop in answering.read_modelfile(modelfile).stops) for text in answers.texts)


def test_grammar_makes_even_a_random_model_speak_nslip(modelfile, closed_port_host):
    answers = answering.answer(INSTRUCTIONS, modelfile, grammar=nslip_gbnf())
    assert answers.runtime == "llama.cpp" and "grammar" in answers.reason
    for text in answers.texts:
        assert encode(decode(text)) == text


def test_runtime_choices_are_checked(modelfile, closed_port_host):
    with pytest.raises(answering.AnswerError, match="no Ollama server at .*start `ollama serve` or set OLLAMA_HOST"):
        answering.answer(INSTRUCTIONS, modelfile, runtime="ollama")
    with pytest.raises(ValueError, match="takes no GBNF grammar"):
        answering.answer(INSTRUCTIONS, modelfile, runtime="ollama", grammar=nslip_gbnf())
    with pytest.raises(ValueError, match="runtime must be one of"):
        answering.answer(INSTRUCTIONS, modelfile, runtime="vllm")
    forced = answering.answer(INSTRUCTIONS[:1], modelfile, runtime="llama.cpp")
    assert forced.runtime == "llama.cpp" and forced.reason.startswith("llama.cpp was asked for; llama.cpp on the CPU")


def test_ollama_round_trip_where_a_server_answers(modelfile):
    up, why = answering.ollama_status()
    if not up:
        pytest.skip(why)
    answers = answering.answer(INSTRUCTIONS, modelfile, model_name="slipcore-tiny-test")
    assert answers.runtime == "ollama" and len(answers.texts) == len(INSTRUCTIONS)
    fallback = answering.answer(INSTRUCTIONS, modelfile, runtime="llama.cpp")
    assert answers.texts == fallback.texts  # same GGUF, template, stops and greedy decoding
