"""Training checkpoints: OUT/ckpt-<step>/ with model.safetensors, optimizer.pt, scheduler.pt and
state.json. (Noise and dropout draws are seeded per step and rank, so no RNG state is needed.)

Full (unsharded) state dicts are gathered to rank 0 and written there, so a checkpoint written under FSDP
on 8 GPUs loads on one GPU (or CPU) and the other way round. A checkpoint folder appears under its final
name only when complete.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

CHECKPOINT_PREFIX = "ckpt-"


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(out_dir: str | Path, step: int, model, optimizer, scheduler, extra: dict) -> Path | None:
    """Collective under torch.distributed (every rank calls it); rank 0 writes."""
    model_state, optim_state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    final = Path(out_dir) / f"{CHECKPOINT_PREFIX}{step:08d}"
    if not _is_main():
        return None
    temporary = final.with_name(final.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model_state.items()}, str(temporary / "model.safetensors"))
    torch.save(optim_state, temporary / "optimizer.pt")
    torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
    (temporary / "state.json").write_text(json.dumps({"step": step, **extra}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    temporary.rename(final)
    return final


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    candidates = sorted(p for p in Path(out_dir).glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))
    return candidates[-1] if candidates else None


def load_checkpoint(path: str | Path, model, optimizer, scheduler) -> int:
    """Restore model, optimizer and scheduler; returns the step. Collective under torch.distributed."""
    path = Path(path)
    main = _is_main()
    # Only rank 0 reads the full state; set_state_dict broadcasts it into every rank's shards.
    model_state = load_file(str(path / "model.safetensors")) if main else {}
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False) if main else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())["step"]


def load_model_weights(path: str | Path, model) -> None:
    """Weights only (sampling): a checkpoint folder or its model.safetensors, every key required."""
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    model.load_state_dict(load_file(str(file)), strict=True)
