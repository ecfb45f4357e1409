"""Answer instructions with the exported model: in Ollama when a server answers, else in llama.cpp.

Both runtimes are driven by the same Modelfile (written by :func:`slipcore_nb.modelfile.write_modelfile`):
its GGUF, adapter, ``TEMPLATE``, ``stop`` list and temperature, read back the way Ollama reads them.
Ollama gets them through its official client (blobs + ``create``); llama.cpp (llama-cpp-python)
renders the same template itself and decodes greedily. The result says which runtime answered and
why, so a notebook run on a laptop without Ollama is honest about what it measured.

Ollama's API takes no GBNF grammar (only JSON schemas), so asking for a grammar means llama.cpp.
It starts no server: llama.cpp runs inside this process, and Ollama must already be serving. The
server the agents talk to is :mod:`slipcore_nb.llama_server`'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .machine import usable_cores
from .modelfile import parse_modelfile, render_template
from .native import run_in_child

DEFAULT_HOST = "http://127.0.0.1:11434"
RUNTIMES = ("auto", "ollama", "llama.cpp")


class AnswerError(RuntimeError):
    """The exported model cannot answer as asked (no Modelfile, no Ollama server); the message says what to do."""


@dataclass(frozen=True)
class ModelfileSettings:
    """What a Modelfile tells a runtime: weights, optional LoRA, prompt template, stops, temperature."""

    gguf: Path
    adapter: Path | None
    template: str
    stops: list[str]
    temperature: float


@dataclass(frozen=True)
class Answers:
    """Texts in the order of the instructions, which runtime produced them, why, and how fast."""

    texts: list[str]
    runtime: str
    reason: str
    load_seconds: float
    seconds: float

    @property
    def messages_per_second(self) -> float:
        return len(self.texts) / self.seconds if self.seconds > 0 else float("inf")


def read_modelfile(path: str | Path) -> ModelfileSettings:
    """The serving settings in a Modelfile; relative paths are relative to its folder, as in Ollama."""
    path = Path(path)
    if not path.is_file():
        raise AnswerError(f"no Modelfile at {path}: run modelfile.write_modelfile first.")
    values: dict[str, list[str]] = {}
    rewrite = "rewrite it with modelfile.write_modelfile (notebook 04)"
    try:
        commands = parse_modelfile(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AnswerError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          f"{rewrite}") from None
    except RuntimeError as err:  # the parser's ExportError: it names the line
        raise AnswerError(f"{path}: {err}") from None
    for name, value in commands:
        values.setdefault(name, []).append(value)
    if "from" not in values or "template" not in values:
        raise AnswerError(f"{path} needs FROM and TEMPLATE lines: {rewrite}.")
    try:
        render_template(values["template"][-1], "")
    except RuntimeError as err:
        raise AnswerError(f"{path}: {err}") from None
    try:
        temperature = float(values.get("temperature", ["0"])[-1])
    except ValueError:
        temperature = float("nan")
    if not 0 <= temperature < float("inf"):
        raise AnswerError(f"{path}: PARAMETER temperature {values['temperature'][-1]!r} is not a number of at least 0")

    def local(ref: str) -> Path:
        return (path.parent / ref).resolve()

    return ModelfileSettings(
        gguf=local(values["from"][-1]),
        adapter=local(values["adapter"][-1]) if "adapter" in values else None,
        template=values["template"][-1],
        stops=values.get("stop", []),
        temperature=temperature,
    )


def ollama_host() -> str:
    """``$OLLAMA_HOST`` (the variable Ollama itself reads) or the local default."""
    return os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def ollama_status(host: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """(True, where) when an Ollama server answers at ``host``, else (False, why not)."""
    import httpx
    import ollama

    host = host or ollama_host()
    try:
        ollama.Client(host=host, timeout=timeout).list()
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as error:
        return False, f"no Ollama server at {host} ({type(error).__name__})"
    return True, f"Ollama server answered at {host}"


def answer(instructions: list[str], modelfile: str | Path, *, runtime: str = "auto", grammar: str | None = None,
           model_name: str = "slipcore", host: str | None = None, max_tokens: int = 128,
           extra_cpu_buffers: bool = False) -> Answers:
    """Answer each instruction (rendered through the Modelfile's template) and time it.

    ``runtime="auto"`` uses Ollama when a server answers and no grammar is asked for, else llama.cpp.
    ``grammar`` is GBNF text (e.g. :func:`slipcore_nb.grammar.nslip_gbnf`) and needs llama.cpp.
    ``extra_cpu_buffers`` lets llama.cpp repack weights for its AMX/AVX kernels (see :func:`load_llama`:
    off by default because that path crashed on an AMX Xeon).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(instructions, str) or not all(isinstance(text, str) for text in instructions):
        raise TypeError("instructions must be a list of str (one answer each), got "
                        + (f"the single string {instructions[:40]!r}" if isinstance(instructions, str)
                           else repr(instructions)[:80]))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    spec = read_modelfile(modelfile)
    host = host or ollama_host()
    if runtime == "llama.cpp":
        return _answer_llama_cpp(instructions, spec, grammar, max_tokens, extra_cpu_buffers, "llama.cpp was asked for")
    if grammar is not None:
        if runtime == "ollama":
            raise ValueError("Ollama's API takes no GBNF grammar: use runtime='llama.cpp' or grammar=None")
        return _answer_llama_cpp(instructions, spec, grammar, max_tokens, extra_cpu_buffers,
                                 "a GBNF grammar was asked for and Ollama's API takes none")
    up, why = ollama_status(host)
    if up:
        return _answer_ollama(instructions, spec, model_name, host, max_tokens, why)
    if runtime == "ollama":
        raise AnswerError(f"{why}: start `ollama serve` or set OLLAMA_HOST.")
    return _answer_llama_cpp(instructions, spec, grammar, max_tokens, extra_cpu_buffers,
                             f"{why}; ran the same GGUF in llama.cpp")


def llama_threads() -> int:
    """Half the usable cores (see :func:`load_llama`): what in-process llama.cpp computes with."""
    return max(1, usable_cores() // 2)


def load_llama(gguf: str | Path, lora: str | Path | None = None, n_ctx: int = 2048, extra_cpu_buffers: bool = False,
               **kwargs):
    """A llama-cpp-python ``Llama`` for prompt and generation alike: every layer on the GPU when
    llama.cpp was built with one, else half the CPU cores, weights in plain CPU buffers.

    Threads: llama.cpp's workers spin at every barrier; with as many threads as cores, a busy machine
    (a notebook kernel training beside it) made the 2.9 M-parameter tiny model 2000x slower per token.
    Buffers: llama.cpp's "extra" CPU buffer types repack quantized weights for the AMX and AVX
    kernels; on an Intel Xeon with AMX that path segfaulted in decode for q8_0 and Q4_K_M files, so
    it stays off (``use_extra_bufts``): one code path on every x86-64 CPU. Its cost in messages/s is
    measured in ``benchmarks/speed.py``. Call this in a child process (:mod:`slipcore_nb.native`).
    """
    import llama_cpp
    from llama_cpp import Llama

    threads = llama_threads()
    kwargs.setdefault("n_gpu_layers", -1 if llama_cpp.llama_supports_gpu_offload() else 0)
    kwargs.setdefault("verbose", False)
    with _extra_cpu_buffers(extra_cpu_buffers):
        return Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=n_ctx, n_threads=threads,
                     n_threads_batch=threads, seed=0, **kwargs)


@contextlib.contextmanager
def _extra_cpu_buffers(enabled: bool):
    """Give ``Llama()`` model parameters with ``use_extra_bufts`` set as asked.

    llama-cpp-python 0.3.36 does not expose that field: its constructor takes
    ``llama_model_default_params()`` and loads the model at once, so the defaults are wrapped for
    the length of one load (this runs in a single-threaded child process).
    """
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params

    def params():
        value = defaults()
        value.use_extra_bufts = enabled
        return value

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


def _answer_ollama(instructions: list[str], spec: ModelfileSettings, model_name: str, host: str, max_tokens: int,
                   reason: str) -> Answers:
    import ollama

    client = ollama.Client(host=host)
    start = time.perf_counter()
    files = {spec.gguf.name: client.create_blob(spec.gguf)}
    adapters = {spec.adapter.name: client.create_blob(spec.adapter)} if spec.adapter else None
    client.create(model=model_name, files=files, adapters=adapters, template=spec.template,
                  parameters={"stop": spec.stops, "temperature": spec.temperature})
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    texts = [client.generate(model=model_name, prompt=instruction,
                             options={"temperature": spec.temperature, "num_predict": max_tokens}).response
             for instruction in instructions]
    return Answers(texts, "ollama", reason, load_seconds, time.perf_counter() - start)


def _answer_llama_cpp(instructions: list[str], spec: ModelfileSettings, grammar: str | None, max_tokens: int,
                      extra_cpu_buffers: bool, reason: str) -> Answers:
    """llama.cpp in a child process, so a crash in native code is an error naming the file, not a dead kernel."""
    return run_in_child(_generate_llama_cpp, instructions, spec, grammar, max_tokens, extra_cpu_buffers, reason,
                        what=f"llama.cpp answering with {spec.gguf.name}")


def _generate_llama_cpp(instructions: list[str], spec: ModelfileSettings, grammar: str | None, max_tokens: int,
                        extra_cpu_buffers: bool, reason: str) -> Answers:
    """Greedy decoding in llama.cpp; with a grammar the stops are left out, since the grammar ends the
    message after ``#`` and a stop such as ``###`` could cut a tag the grammar admits."""
    from llama_cpp import LlamaGrammar, llama_supports_gpu_offload

    start = time.perf_counter()
    llm = load_llama(spec.gguf, spec.adapter, extra_cpu_buffers=extra_cpu_buffers)
    reason += f"; llama.cpp on the {'GPU' if llama_supports_gpu_offload() else 'CPU'}"
    constraint = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
    llm(render_template(spec.template, ""), max_tokens=1)  # warm-up: first-call setup is not throughput
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    try:
        texts = [llm(render_template(spec.template, instruction), max_tokens=max_tokens,
                     temperature=spec.temperature, stop=None if constraint else spec.stops,
                     grammar=constraint)["choices"][0]["text"]
                 for instruction in instructions]
    finally:
        llm.close()
    return Answers(texts, "llama.cpp", reason, load_seconds, time.perf_counter() - start)
