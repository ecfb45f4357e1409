"""One client for every OpenAI-compatible server an agent may talk to: llama-server, vLLM, SGLang.

All three take ``POST {base_url}/v1/completions`` with ``model``, ``prompt``, ``max_tokens``,
``temperature`` and ``stop``, so moving agents from a laptop's llama-server to a vLLM cluster is a
base URL. They differ in one place, where a grammar goes (:data:`GRAMMAR_FIELDS`): llama-server
reads GBNF from ``grammar``; vLLM (0.12 and later) from ``structured_outputs.grammar`` and enforces
it with xgrammar; SGLang from ``ebnf``. The grammar is always :func:`slipcore_nb.grammar.nslip_gbnf`'s,
generated from the protocol tables; tests hold xgrammar's verdicts on it equal to llama.cpp's.

Tested here against llama-server only (vLLM and SGLang need CUDA; see the vLLM recipe in docs/scaling.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .prompts import PROMPT

GRAMMAR_FIELDS = {
    "llama.cpp": lambda grammar: {"grammar": grammar},
    "vllm": lambda grammar: {"structured_outputs": {"grammar": grammar}},
    "sglang": lambda grammar: {"ebnf": grammar},
}


class CompletionError(RuntimeError):
    """The server refused or failed a request; the message has its status and body."""


@dataclass(frozen=True)
class Completion:
    """One answer: its text, why generation stopped, token counts as the server reports them, wall time.

    ``cached_tokens``: prompt tokens the server took from its prompt cache instead of computing them.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached_tokens: int = 0


class CompletionsClient:
    """Completions from ``base_url`` for ``model`` (llama-server ignores the name; vLLM picks a LoRA by it).

    ``server`` says where the grammar goes (a key of :data:`GRAMMAR_FIELDS`). ``extra`` fields are
    sent with every request: llama-server's ``lora`` scales or ``cache_prompt``, for instance.
    """

    def __init__(self, base_url: str, model: str = "nslip", server: str = "llama.cpp", timeout: float = 120,
                 extra: dict | None = None):
        if server not in GRAMMAR_FIELDS:
            raise ValueError(f"server must be one of {sorted(GRAMMAR_FIELDS)}, got {server!r}")
        import httpx

        self.model, self.server, self.extra = model, server, dict(extra or {})
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def request_body(self, prompt: str, max_tokens: int = 96, grammar: str | None = None,
                     temperature: float = 0.0, stop: list[str] | None = None, **extra) -> dict:
        """The JSON body sent for one prompt (greedy by default, stopping where the prompt format ends)."""
        if isinstance(stop, str) or not (stop is None or all(isinstance(item, str) for item in stop)):
            raise TypeError(f"stop must be a list of strings (e.g. ['###']), got {stop!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if not isinstance(prompt, str) or not prompt:
            raise TypeError(f"prompt must be non-empty text (PROMPT.prompt(instruction)), got {prompt!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature must be a finite number of at least 0 (0: greedy), got {temperature!r}")
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "stop": list(PROMPT.extra_stops if stop is None else stop), **self.extra, **extra}
        if grammar is not None:
            body.update(GRAMMAR_FIELDS[self.server](grammar))
        return body

    def complete(self, prompt: str, **options) -> Completion:
        """One completion; ``options`` as :meth:`request_body`'s."""
        began = time.perf_counter()
        response = self.http.post("/v1/completions", json=self.request_body(prompt, **options))
        if response.status_code != 200:
            raise CompletionError(f"{self.http.base_url}/v1/completions answered {response.status_code}: "
                                  f"{response.text[:500]}")
        data = response.json()
        choice, usage = data["choices"][0], data.get("usage") or {}
        return Completion(text=choice["text"], finish_reason=choice.get("finish_reason") or "",
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          seconds=time.perf_counter() - began,
                          cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "CompletionsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
