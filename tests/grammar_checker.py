"""Test helper: does llama.cpp's own grammar engine admit a text? (No second matcher written in Python.)"""

from __future__ import annotations

import ctypes
from pathlib import Path

from slipcore_nb.gguf_vocab import GGUFVocab
from slipcore_nb.grammar import ROOT, nslip_gbnf


class GrammarChecker:
    """Asks llama.cpp's grammar engine whether a text is admitted, using a GGUF model's vocabulary.

    The text is split into vocabulary pieces (longest match; byte tokens cover anything else) and
    fed to llama.cpp's grammar sampler one token at a time: each token must keep a non ``-inf``
    logit, and after the last one the end-of-generation token must be allowed.
    """

    def __init__(self, gguf_path: str | Path, gbnf: str | None = None):
        import llama_cpp

        self._lib = llama_cpp
        self._gguf = GGUFVocab(gguf_path)
        self._vocab = self._gguf.vocab
        self.gbnf = gbnf or nslip_gbnf()
        self._eos = self._gguf.eos
        self._pieces: dict[bytes, int] = {}
        for token in range(self._gguf.size):
            piece = self._gguf.piece(token)
            if piece:
                self._pieces.setdefault(piece, token)
        self._longest = max(map(len, self._pieces))
        # Fail now, with llama.cpp's parser, if the grammar text itself is broken.
        self._free(self._new_sampler())

    def _new_sampler(self, gbnf: str | None = None):
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, (gbnf or self.gbnf).encode(), ROOT.encode())
        if not sampler:
            raise ValueError("llama.cpp rejected the GBNF grammar (see its log above)")
        return sampler

    def _free(self, sampler) -> None:
        self._lib.llama_sampler_free(sampler)

    def tokens(self, text: str) -> list[int]:
        """A tokenization of ``text`` into vocabulary pieces whose bytes concatenate to it exactly."""
        data, pos, out = text.encode(), 0, []
        while pos < len(data):
            for size in range(min(self._longest, len(data) - pos), 0, -1):
                token = self._pieces.get(data[pos : pos + size])
                if token is not None:
                    out.append(token)
                    pos += size
                    break
            else:
                raise ValueError(f"byte {data[pos]:#x} at offset {pos} has no token in this vocabulary")
        return out

    def _allowed(self, sampler, token: int) -> bool:
        candidate = self._lib.llama_token_data(id=token, logit=0.0, p=0.0)
        array = self._lib.llama_token_data_array(
            data=ctypes.pointer(candidate), size=1, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return candidate.logit != float("-inf")

    def accepts(self, text: str, gbnf: str | None = None) -> bool:
        """True when llama.cpp's grammar engine admits exactly ``text`` as one complete message (under
        ``gbnf`` when given, else the checker's grammar)."""
        sampler = self._new_sampler(gbnf)
        try:
            for token in self.tokens(text):
                if not self._allowed(sampler, token):
                    return False
                self._lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self._eos)
        finally:
            self._free(sampler)

    def close(self) -> None:
        self._gguf.close()
