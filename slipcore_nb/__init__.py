"""slipcore-notebooks' helper library: what the notebooks import (see the README's library map)."""

import logging

# Warnings that every import of Unsloth on a CPU logs and nobody can act on: torchao's CUDA-only
# kernels (.so files) fail to load without a GPU, and torchao registers enums in a way torch 2.13
# deprecates; on a CPU with AVX512-BF16 bitsandbytes asks for the `kernels` package (it would fetch a
# 4-bit kernel from the Hugging Face hub; 4-bit loading here is CUDA only). Raised to ERROR at their own
# loggers, so real errors from all three still show.
for _name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
    logging.getLogger(_name).setLevel(logging.ERROR)
