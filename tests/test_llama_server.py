"""llama-server, compiled from the vendored llama.cpp, serving the tiny model on loopback, and the
OpenAI-compatible client that agents use against it (and against vLLM or SGLang, by base URL).

The server is a real llama.cpp process (a crash ends that process, not the test run). The first run
builds it into the cache (minutes); later runs reuse the binary.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from slipcore_nb import export
from slipcore_nb.completions import GRAMMAR_FIELDS, CompletionError, CompletionsClient
from slipcore_nb.grammar import nslip_gbnf
from slipcore_nb.llama_server import LlamaServer, LlamaServerError, build_options
from slipcore_nb.prompts import PROMPT
from slipcore_nb.protocol import decode, encode
from slipcore_nb.tiny import build_tiny


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return export.to_gguf(build_tiny(), tmp_path_factory.mktemp("server"), types=("f16",), name="tiny")["f16"].path


@pytest.fixture(scope="module")
def server(gguf):
    with LlamaServer(gguf, parallel=2, ctx_per_slot=1024, threads=2) as running:
        yield running


def test_parallel_slots_answer_concurrent_requests_in_nslip_under_the_grammar(server):
    """Four agents at once, two slots: every answer is canonical nSLIP, counted in tokens."""
    prompts = [PROMPT.prompt(f"Goal[{i}]: anything. Respond with one nSLIP message.") for i in range(4)]
    with CompletionsClient(server.base_url) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda p: client.complete(p, grammar=nslip_gbnf(), max_tokens=600), prompts))
    for answer in answers:
        assert answer.finish_reason == "stop", answer  # the grammar ended it, not the token limit
        assert encode(decode(answer.text)) == answer.text
        assert answer.prompt_tokens > 10 and answer.completion_tokens > 5
    assert httpx.get(f"{server.base_url}/props", timeout=5).json()["total_slots"] == 2


def test_a_request_the_server_refuses_is_a_clear_error(server):
    with CompletionsClient(server.base_url) as client, pytest.raises(CompletionError, match="answered 400"):
        client.complete(PROMPT.prompt("Goal[1]: x"), grammar='root ::= "unclosed')


def test_a_repeated_prompt_comes_from_the_cache_until_a_restart(server):
    """Why notebook 06 restarts the server between the runs it compares: the same client, across the restart."""
    prompt = PROMPT.prompt("Goal[7]: cache me. Respond with one nSLIP message.")
    with CompletionsClient(server.base_url) as client:
        server.restart()  # other tests' prompts share this one's opening words
        first = client.complete(prompt, max_tokens=4)
        assert first.cached_tokens == 0 and first.prompt_tokens > 10
        assert client.complete(prompt, max_tokens=4).cached_tokens >= first.prompt_tokens - 1
        server.restart()
        assert client.complete(prompt, max_tokens=4).cached_tokens == 0


def test_the_command_is_what_a_user_would_type(gguf, tmp_path, monkeypatch):
    monkeypatch.setattr("slipcore_nb.llama_cpp_build.gpu_arch", lambda: None)  # a CPU machine
    command = LlamaServer(gguf, parallel=8, ctx_per_slot=256, threads=2, loras=(tmp_path / "a.gguf",),
                          port=8099).command()
    text = " ".join(command)
    assert f"--model {gguf} --host 127.0.0.1 --port 8099 --parallel 8 --ctx-size 2048 --threads 2" in text
    assert "--lora " + str(tmp_path / "a.gguf") in text and "--lora-init-without-apply" in text
    assert "--no-repack" in command  # the repacked CPU path crashed on an AMX Xeon (answering.load_llama)
    assert "--no-repack" not in LlamaServer(gguf, extra_cpu_buffers=True).command()
    assert "--n-gpu-layers" not in command
    spec = LlamaServer(gguf, extra_args=("--spec-type", "ngram-simple")).command()
    assert spec[-2:] == ["--spec-type", "ngram-simple"]  # any other llama-server flag, as given


def test_on_a_gpu_machine_every_layer_goes_to_the_gpu(gguf, monkeypatch):
    monkeypatch.setattr("slipcore_nb.llama_cpp_build.gpu_arch", lambda: "90")
    assert LlamaServer(gguf).command()[-2:] == ["--n-gpu-layers", "999"]


def test_stopping_frees_the_port(gguf):
    running = LlamaServer(gguf, parallel=1, threads=1).start()
    assert httpx.get(f"{running.base_url}/health", timeout=5).status_code == 200
    running.stop()
    assert running.process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.base_url}/health", timeout=2)


def test_a_process_that_exits_without_stopping_its_server_takes_it_along(gguf):
    """A notebook whose cell failed before the stop cell: the kernel's exit stops the server."""
    script = ("import sys; from slipcore_nb.llama_server import LlamaServer; "
              f"print(LlamaServer({str(gguf)!r}, parallel=1, threads=1).start().process.pid)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_broken_model_file_fails_with_the_servers_own_words(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(LlamaServerError, match="exited with status") as error:
        LlamaServer(broken, threads=1).start(timeout=60)
    assert "broken.gguf" in str(error.value)
    with pytest.raises(LlamaServerError, match="no model file"):
        LlamaServer(tmp_path / "missing.gguf")


@pytest.mark.parametrize("server_kind, field", [("llama.cpp", {"grammar": "G"}),
                                                ("vllm", {"structured_outputs": {"grammar": "G"}}),
                                                ("sglang", {"ebnf": "G"})])
def test_the_grammar_goes_where_each_server_reads_it(server_kind, field):
    client = CompletionsClient("http://127.0.0.1:9", model="planner", server=server_kind)
    body = client.request_body("P", grammar="G", max_tokens=7)
    assert body == {"model": "planner", "prompt": "P", "max_tokens": 7, "temperature": 0.0,
                    "stop": list(PROMPT.extra_stops), **field}
    assert "grammar" not in client.request_body("P") and set(GRAMMAR_FIELDS) == {"llama.cpp", "vllm", "sglang"}
    with pytest.raises(ValueError, match="server must be one of"):
        CompletionsClient("http://127.0.0.1:9", server="tgi")


def test_a_gpu_machine_builds_the_server_for_its_gpu():
    """As 04 builds llama-cpp-python on Colab: this GPU's architecture only, portable CPU code; else native CPU."""
    variant, options = build_options("75", "12.8")
    assert variant == "cuda12.8-sm75"
    assert {"-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=75", "-DGGML_NATIVE=OFF"} <= set(options)
    assert build_options(None, None) == build_options("75", None) == ("cpu", ())  # no GPU, or no CUDA compiler
