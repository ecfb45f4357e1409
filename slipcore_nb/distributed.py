"""Training on several processes (``accelerate launch``, ``torchrun``): which rank does what.

Under DDP every process holds the whole model, trains on its own share of each batch, and the
gradients are averaged before every optimizer step, so all ranks end each step with the same weights.
The work around training is not shared: rank 0 alone scores the model, decides where the run starts
(:func:`slipcore_nb.training.start_run` may clear a folder) and writes checkpoints, metrics and the
adapter; the other ranks learn its decision through :func:`broadcast`. :class:`RowLog` and
:func:`weights_digest` let the run prove it in ``train_metrics.json``: each rank's steps, the rows it
saw (no row seen twice across ranks) and a digest of its weights (equal on every rank, and equal to
the saved adapter's).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job, from the variables every launcher sets (one process: 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Ranks":
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def mode(self) -> str:
        """The parallelism accelerate launched: "DDP", "DeepSpeed ZeRO-N" or "FSDP" ("one process" alone)."""
        if not self.distributed:
            return "one process"
        if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
            return f"DeepSpeed ZeRO-{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '?')}"
        return "FSDP" if os.environ.get("ACCELERATE_USE_FSDP") == "true" else "DDP"

    @property
    def shards_weights(self) -> bool:
        """True under FSDP and ZeRO-3: no rank holds the whole model, so rank 0 cannot generate or
        save on its own; every step that touches the weights must be taken by all ranks together."""
        return self.mode in ("FSDP", "DeepSpeed ZeRO-3")

    def describe(self) -> str:
        if not self.distributed:
            return self.mode
        return f"{self.mode}, rank {self.rank} of {self.world_size} (local rank {self.local_rank})"


def sft_kwargs(ranks: Ranks) -> dict:
    """``SFTConfig`` fields for a multi-process run; none for one process.

    LoRA trains every adapter weight in every step, so DDP need not search the graph for unused
    parameters (that search costs a second traversal per step and warns on every rank).
    """
    return {"ddp_find_unused_parameters": False} if ranks.distributed else {}


def broadcast(value, ranks: Ranks):
    """Rank 0's ``value`` on every rank (the process group is up once the trainer exists)."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, ranks: Ranks) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    values = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values


def wait_for_everyone(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def load_checkpoints_on_indexed_cpus() -> None:
    """Let ``torch.load`` map tensors to ``cpu:N``, the device accelerate gives rank N of a CPU-only job.

    On resume the trainer loads the optimizer state with ``map_location=args.device`` whenever there
    are several processes; on CPUs that is ``cpu:0``, ``cpu:1``..., which torch's registry of
    locations does not know ("don't know how to restore data location ... cpu:0"), so a multi-process
    CPU run could not resume. A CPU tensor needs no moving: the added entry returns it as it is.
    """
    import torch.serialization

    def deserialize(storage, location: str):
        return storage if location.startswith("cpu:") else None

    registry = torch.serialization._package_registry
    if deserialize.__qualname__ not in {getattr(entry[2], "__qualname__", "") for entry in registry}:
        # Last in line, and a priority no other entry has (the registry is sorted by it).
        torch.serialization.register_package(max(entry[0] for entry in registry) + 1, lambda _storage: None, deserialize)


class RowLog:
    """Wraps a trainer's data collator and keeps a short digest of every row it batches on this rank.

    accelerate's data loader prepares one batch ahead, so a rank batches one batch more than it trains on.
    """

    def __init__(self, collator):
        self.collator = collator
        self.rows: list[str] = []

    def __call__(self, features):
        for feature in features:
            ids = ",".join(map(str, feature["input_ids"]))
            self.rows.append(hashlib.sha256(ids.encode()).hexdigest()[:16])
        return self.collator(features)


def weights_digest(tensors: Mapping) -> str:
    """sha256 over names and float32 values, in name order: the same for a live model's
    ``get_peft_model_state_dict`` and for the adapter file it was saved to."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def rank_report(ranks: Ranks, steps: int, rows: RowLog, model) -> dict:
    """What one rank did: steps, rows seen and (where it holds them whole) the digest of its LoRA weights."""
    from peft import get_peft_model_state_dict

    report = {"rank": ranks.rank, "steps": steps, "rows_batched": len(rows.rows), "row_digests": rows.rows}
    if not ranks.shards_weights:
        report["adapter_sha256"] = weights_digest(get_peft_model_state_dict(model))
    return report


def summarize(reports: list[dict]) -> dict:
    """The ranks' reports for ``train_metrics.json``: per rank without the row list, plus how many rows
    more than one rank trained on (0 when the data was sharded)."""
    seen: dict[str, int] = {}
    for report in reports:
        for row in set(report["row_digests"]):
            seen[row] = seen.get(row, 0) + 1
    return {
        "world_size": len(reports),
        "ranks": [{key: value for key, value in report.items() if key != "row_digests"} for report in reports],
        "rows_on_several_ranks": sum(count > 1 for count in seen.values()),
    }
