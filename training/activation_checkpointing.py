"""Activation checkpointing of the DiT's blocks, applied from outside the model.

With `train.grad_checkpointing`, the first `train.checkpoint_blocks` blocks (null: all) keep only part of
their forward for the backward and recompute the rest; `train.checkpoint_policy` names what they keep:
- block: nothing but the block's input; the whole forward runs again (least memory);
- save_attention: the attention kernels' outputs;
- save_attention_and_narrow_matmuls: also every matmul output no wider than its input, so only the
  FFN's up-projection (the widest activation) and pointwise ops are redone;
- save_attention_and_matmuls: every attention and matmul output; only pointwise ops are redone.

As torchtitan's apply_ac, each checkpointed block is wrapped in a CheckpointWrapper (selective policies
through create_selective_checkpoint_contexts). The wrapper's state-dict hooks drop its
`_checkpoint_wrapped_module.` prefix, so the model's state-dict keys, and the checkpoints it writes and
loads, are those of the unwrapped model. Apply it before torch.compile, so that compile plans the
recomputation with the policy, and before fully_shard, so that each FSDP unit is a wrapped block.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.dit import InterActDiT

CheckpointPolicyName = Literal["block", "save_attention", "save_attention_and_narrow_matmuls", "save_attention_and_matmuls"]

_aten = torch.ops.aten
_ATTENTION_OPS = {_aten._scaled_dot_product_cudnn_attention.default, _aten._scaled_dot_product_flash_attention.default,
                  _aten._scaled_dot_product_efficient_attention.default, _aten._scaled_dot_product_flash_attention_for_cpu.default}
_MATMUL_OPS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default}  # (bias,) input, weight: the weight comes last


def _keep(saved: bool) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if saved else CheckpointPolicy.PREFER_RECOMPUTE


def _save_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return _keep(op in _ATTENTION_OPS)


def _save_attention_and_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return _keep(op in _ATTENTION_OPS or op in _MATMUL_OPS)


def _save_attention_and_narrow_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Also recompute the matmuls that widen their input (the FFN's up-projection): their outputs are the
    largest activations and among the cheapest matmuls to redo per byte."""
    return _keep(op in _ATTENTION_OPS or (op in _MATMUL_OPS and args[-1].shape[-1] <= args[-2].shape[-1]))


# Per policy, which ops' outputs a checkpointed block keeps for its backward (None: none, whole-block recompute).
SAVED_OPS: dict[CheckpointPolicyName, Callable[..., CheckpointPolicy] | None] = {
    "block": None,
    "save_attention": _save_attention,
    "save_attention_and_narrow_matmuls": _save_attention_and_narrow_matmuls,
    "save_attention_and_matmuls": _save_attention_and_matmuls,
}


def _checkpoint_when_training(block: nn.Module, *inputs, **checkpoint_options):
    """Recompute only where a backward follows: sampling and evaluation run the block as it is."""
    if block.training and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False, **checkpoint_options)
    return block(*inputs)


def apply_activation_checkpointing(model: InterActDiT, train: TrainConfig) -> None:
    """Wrap the first train.checkpoint_blocks blocks (all when null) to checkpoint with
    train.checkpoint_policy; nothing without train.grad_checkpointing."""
    if not train.grad_checkpointing:
        return
    saved_ops = SAVED_OPS[train.checkpoint_policy]
    # No context_fn at all for whole blocks: torch.compile traces only selective ones.
    options = {} if saved_ops is None else {"context_fn": partial(create_selective_checkpoint_contexts, saved_ops)}
    count = len(model.blocks) if train.checkpoint_blocks is None else min(train.checkpoint_blocks, len(model.blocks))
    for index in range(count):
        model.blocks[index] = checkpoint_wrapper(model.blocks[index], checkpoint_fn=_checkpoint_when_training, **options)
