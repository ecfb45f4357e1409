"""A GGUF's vocabulary as llama.cpp reads it, and nothing more: no context, no weights.

``Llama(model_path, vocab_only=True)`` still creates a llama.cpp context for a model without
tensors, and with the CUDA build the process doing that can die (SIGSEGV right after
``ggml_cuda_init``, seen on an H200 by ``make gpu-check``) where the CPU build copes; a context is never
needed to tokenize. :class:`GGUFVocab` loads only the vocabulary through llama.cpp's C API (as
llama-cpp-python exposes it) and answers what the export checks, the grammar tests and the token counts
ask. The tests cover it on CPUs; on a GPU, ``make gpu-check``'s GGUF step is what shows it avoids the
crash (docs/gpu.md says whether that step has passed).
Native code: callers that must survive a crash run it in a child (:mod:`slipcore_nb.native`).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path


class GGUFVocab:
    """llama.cpp's tokenizer of one GGUF file; use as a context manager or call :meth:`close`."""

    def __init__(self, gguf_path: str | Path):
        import llama_cpp

        path = Path(gguf_path)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        params.n_gpu_layers = 0
        llama_cpp.llama_backend_init()
        log = logging.getLogger("llama-cpp-python")  # llama-cpp-python forwards llama.cpp's log through it
        level, _ = log.level, log.setLevel(logging.ERROR)
        try:
            self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        finally:
            log.setLevel(level)
        if not self._model:
            raise ValueError(f"llama.cpp could not read the vocabulary of {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self._model)  # what grammar samplers take
        self.path = path

    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        """Token ids; ``special`` parses special-token text (``<|im_end|>``) as those tokens."""
        data = text.encode()
        room = len(data) + 8
        for _ in range(2):  # llama_tokenize returns minus the size it needs when the buffer is short
            tokens = (self._lib.llama_token * room)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), tokens, room, add_bos, special)
            if n >= 0:
                return list(tokens[:n])
            room = -n
        raise RuntimeError(f"llama.cpp could not tokenize {text[:40]!r}... with {self.path.name}")

    @property
    def eos(self) -> int:
        return self._lib.llama_vocab_eos(self.vocab)

    @property
    def size(self) -> int:
        return self._lib.llama_vocab_n_tokens(self.vocab)

    def token_text(self, token: int) -> str:
        """The token as the vocabulary stores it (``<|im_end|>``, ``Ġthe``)."""
        return self._lib.llama_vocab_get_text(self.vocab, token).decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The bytes the token stands for in generated text (special tokens, and pieces over 256 bytes,
        come back empty)."""
        buffer = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:max(n, 0)]

    def metadata(self, key: str) -> str | None:
        """One GGUF metadata value as text (``tokenizer.ggml.model`` -> ``gpt2``), or None."""
        buffer = ctypes.create_string_buffer(1024)
        n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, len(buffer))
        return buffer.value.decode("utf-8", "replace") if n >= 0 else None

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> GGUFVocab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
