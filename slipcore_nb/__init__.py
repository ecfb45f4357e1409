"""slipcore-notebooks' helper library: what the notebooks import (see the README's notebook table)."""

import logging

# Two warnings that every import of Unsloth on a CPU logs and nobody can act on: torchao's CUDA-only
# kernels (.so files) fail to load without a GPU, and torchao registers enums in a way torch 2.13
# deprecates. Raised to ERROR at their own loggers, so real errors from both still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
