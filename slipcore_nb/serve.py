"""Answer instructions with the exported model: in Ollama when a server answers, else in llama.cpp.

Both runtimes are driven by the same Modelfile (written by :func:`slipcore_nb.export.write_modelfile`):
its GGUF, adapter, ``TEMPLATE``, ``stop`` list and temperature, read back the way Ollama reads them.
Ollama gets them through its official client (blobs + ``create``); llama.cpp (llama-cpp-python)
renders the same template itself and decodes greedily. The result says which runtime answered and
why, so a notebook run on a laptop without Ollama is honest about what it measured.

Ollama's API takes no GBNF grammar (only JSON schemas), so asking for a grammar means llama.cpp.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .export import ExportError, parse_modelfile, render_template

DEFAULT_HOST = "http://127.0.0.1:11434"
RUNTIMES = ("auto", "ollama", "llama.cpp")


@dataclass(frozen=True)
class ServeSpec:
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


def read_modelfile(path: str | Path) -> ServeSpec:
    """The serving settings in a Modelfile; relative paths are relative to its folder, as in Ollama."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no Modelfile at {path}: run export.write_modelfile first.")
    values: dict[str, list[str]] = {}
    for name, value in parse_modelfile(path.read_text()):
        values.setdefault(name, []).append(value)
    if "from" not in values or "template" not in values:
        raise ExportError(f"{path} needs FROM and TEMPLATE lines: rewrite it with export.write_modelfile.")

    def local(ref: str) -> Path:
        return (path.parent / ref).resolve()

    return ServeSpec(
        gguf=local(values["from"][-1]),
        adapter=local(values["adapter"][-1]) if "adapter" in values else None,
        template=values["template"][-1],
        stops=values.get("stop", []),
        temperature=float(values.get("temperature", ["0"])[-1]),
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
           model_name: str = "slipcore", host: str | None = None, max_tokens: int = 128) -> Answers:
    """Answer each instruction (rendered through the Modelfile's template) and time it.

    ``runtime="auto"`` uses Ollama when a server answers and no grammar is asked for, else llama.cpp.
    ``grammar`` is GBNF text (e.g. :func:`slipcore_nb.grammar.nslip_gbnf`) and needs llama.cpp.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    spec = read_modelfile(modelfile)
    host = host or ollama_host()
    if runtime == "llama.cpp":
        return _answer_llama_cpp(instructions, spec, grammar, max_tokens, "llama.cpp was asked for")
    if grammar is not None:
        if runtime == "ollama":
            raise ValueError("Ollama's API takes no GBNF grammar: use runtime='llama.cpp' or grammar=None")
        return _answer_llama_cpp(instructions, spec, grammar, max_tokens,
                                 "a GBNF grammar was asked for and Ollama's API takes none")
    up, why = ollama_status(host)
    if up:
        return _answer_ollama(instructions, spec, model_name, host, max_tokens, why)
    if runtime == "ollama":
        raise ExportError(f"{why}: start `ollama serve` or set OLLAMA_HOST.")
    return _answer_llama_cpp(instructions, spec, grammar, max_tokens, f"{why}; ran the same GGUF in llama.cpp")


def load_llama(gguf: str | Path, lora: str | Path | None = None, n_ctx: int = 2048, **kwargs):
    """A llama-cpp-python ``Llama`` on half the cores, for prompt and generation alike.

    llama.cpp's worker threads spin at every barrier: with as many threads as cores, a busy machine
    (a notebook kernel training beside it) made a 3 M-parameter model 2000x slower per token.
    """
    from llama_cpp import Llama

    threads = max(1, (os.cpu_count() or 2) // 2)
    return Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=n_ctx, n_threads=threads,
                 n_threads_batch=threads, seed=0, verbose=False, **kwargs)


def _answer_ollama(instructions: list[str], spec: ServeSpec, model_name: str, host: str, max_tokens: int,
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


def _answer_llama_cpp(instructions: list[str], spec: ServeSpec, grammar: str | None, max_tokens: int,
                      reason: str) -> Answers:
    """Greedy decoding in llama.cpp; with a grammar the stops are left out, since the grammar ends the
    message after ``#`` and a stop such as ``###`` could cut a tag the grammar admits."""
    from llama_cpp import LlamaGrammar

    start = time.perf_counter()
    llm = load_llama(spec.gguf, spec.adapter)
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
