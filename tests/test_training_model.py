"""The DiT: shapes, reference tokens, mask predictor sharing, audio windows and gating, RoPE."""
import os
from collections import Counter
from typing import get_args

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from training.activation_checkpointing import CheckpointPolicyName, apply_activation_checkpointing  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dit import AudioGate, InterActDiT  # noqa: E402
from training.heads import AudioCrossAttention, MaskPredictor  # noqa: E402
from training.rope import Rope3D, apply_rope, grid_positions  # noqa: E402
from training.testing import micro_config, single_torch_thread  # noqa: F401, E402

CONFIG = micro_config().model


def make_inputs(batch=2, refs=2, frames=2, height=4, width=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        latents=torch.randn(batch, CONFIG.in_dim, frames, height, width, generator=g),
        timesteps=torch.tensor([700.0, 200.0][:batch]),
        text=torch.randn(batch, 3, CONFIG.text_dim, generator=g),
        ref_latents=torch.randn(batch, refs, CONFIG.in_dim, 1, 4, 4, generator=g),
        audio=torch.randn(batch, refs, frames, 4, CONFIG.audio_dim, generator=g),
        audio_muted=torch.randn(batch, frames, 4, CONFIG.audio_dim, generator=g),
    )


def model_with_live_audio(seed=0):
    """The audio output projections start at zero (a loaded DiT is unchanged); tests need them live."""
    torch.manual_seed(seed)
    model = InterActDiT(CONFIG)
    for block in model.blocks:
        torch.nn.init.normal_(block.audio_attn.o.weight, std=0.05)
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    return model.eval()


@pytest.mark.parametrize("refs", [1, 3])
def test_forward_shapes(refs):
    model = InterActDiT(CONFIG).eval()
    inputs = make_inputs(refs=refs)
    out = model(**inputs, gate=AudioGate("global"))
    assert out.velocity.shape == inputs["latents"].shape
    video_tokens = 2 * (4 // 2) * (8 // 2)
    assert out.mask_logits.shape == (2, CONFIG.num_layers, refs, video_tokens)


def test_mask_predictor_shares_weights_across_references():
    model = InterActDiT(CONFIG).eval()
    before = {name: p.clone() for name, p in model.named_parameters()}
    for refs in (1, 2, 3):  # any number of references runs on the same parameters
        model(**make_inputs(refs=refs), gate=AudioGate("global"))
    assert {name for name, _ in model.named_parameters()} == set(before)
    predictor = MaskPredictor(dim=32, mask_dim=16, num_heads=2)  # built without a reference count
    video, references = torch.randn(1, 10, 32), torch.randn(1, 3, 5, 32)
    video_angles = Rope3D(8).angles(grid_positions(1, 2, 5))
    ref_angles = torch.stack([Rope3D(8).angles(grid_positions(1, 1, 5, frame_offset=1 + i)) for i in range(3)])
    logits = predictor(video, references, video_angles, ref_angles)
    order = torch.tensor([2, 0, 1])
    permuted = predictor(video, references[:, order], video_angles, ref_angles[order])
    torch.testing.assert_close(permuted, logits[:, order])  # the same function applied to each reference


def test_reference_tokens_receive_no_loss():
    model = model_with_live_audio()
    inputs = make_inputs()
    captured = {}

    def keep_grad(module, args, output):
        hidden = output[0]
        hidden.register_hook(lambda grad: captured.__setitem__("grad", grad))

    model.blocks[-1].register_forward_hook(keep_grad)
    out = model(**inputs, gate=AudioGate("global"))
    out.velocity.square().mean().backward()
    video_tokens = out.mask_logits.shape[-1]
    grad = captured["grad"]
    assert grad[:, :video_tokens].abs().sum() > 0
    assert torch.count_nonzero(grad[:, video_tokens:]) == 0  # reference tokens never reach the head


def test_audio_attention_sees_only_its_window():
    torch.manual_seed(0)
    layer = AudioCrossAttention(dim=32, num_heads=2, window=2)
    torch.nn.init.normal_(layer.o.weight, std=0.1)
    frames, tokens_per_frame = 8, 6
    video = torch.randn(1, frames * tokens_per_frame, 32)
    audio = torch.randn(1, frames, 4, 32)
    changed = audio.clone()
    changed[:, 0] += 5.0  # new audio at latent frame 0
    queries = layer.queries(video, frames)
    delta = (layer.attend(queries, changed) - layer.attend(queries, audio)).abs().unflatten(1, (frames, -1)).amax(dim=(0, 2, 3))
    assert (delta[:3] > 1e-4).all()  # frames 0..2 are within +-2 latent frames of frame 0
    assert (delta[3:] == 0).all()


def test_gate_masks_route_each_identity_audio():
    model = model_with_live_audio()
    inputs = make_inputs()
    video_tokens = 2 * 2 * 4
    other = dict(inputs, audio=inputs["audio"].clone())
    other["audio"][:, 0] += 3.0  # change identity 0's audio only

    def velocity(batch, masks):
        return model(**batch, gate=AudioGate("masks", masks)).velocity

    closed = torch.stack([torch.zeros(2, video_tokens), torch.ones(2, video_tokens)], dim=1)
    torch.testing.assert_close(velocity(inputs, closed), velocity(other, closed))
    opened = closed.flip(1)
    assert (velocity(inputs, opened) - velocity(other, opened)).abs().max() > 1e-4
    muted = model(**inputs, gate=AudioGate("muted")).velocity
    torch.testing.assert_close(muted, velocity(inputs, torch.zeros(2, 2, video_tokens)), atol=1e-5, rtol=1e-5)


def test_rope_depends_only_on_relative_position():
    rope = Rope3D(24)
    q, k = torch.randn(24), torch.randn(24)

    def score(qpos, kpos):
        angles = rope.angles(torch.tensor([qpos, kpos], dtype=torch.float64))
        return (apply_rope(q[None], angles[:1]) * apply_rope(k[None], angles[1:])).sum()

    torch.testing.assert_close(score((3, 1, 2), (1, 4, 4)), score((7, 5, 2), (5, 8, 4)))
    assert not torch.allclose(score((3, 1, 2), (1, 4, 4)), score((3, 1, 2), (2, 4, 4)))


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))


def gradients_and_backward_ops(policy: str | None, blocks: int | None = None):
    """Gradients of one loss, and the ops the backward ran, under a checkpoint policy (None: no checkpointing)
    of the first `blocks` blocks (None: all)."""
    inputs = make_inputs()
    model = model_with_live_audio().train()
    apply_activation_checkpointing(model, TrainConfig(grad_checkpointing=policy is not None, checkpoint_policy=policy or "block",
                                                      checkpoint_blocks=blocks))
    out = model(**inputs, gate=AudioGate("global"))
    with OpCounter() as backward_ops:
        (out.velocity.square().mean() + out.mask_logits.sigmoid().mean()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), backward_ops.counts


def test_checkpoint_policies_give_the_same_gradients_and_recompute_only_what_they_do_not_keep():
    reference, plain = gradients_and_backward_ops(None)
    attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    runs = {policy: gradients_and_backward_ops(policy) for policy in get_args(CheckpointPolicyName)}
    for policy, (grads, counts) in runs.items():
        torch.testing.assert_close(grads, reference, msg=policy)
        assert (counts[attention] > 0) == (policy == "block"), policy  # the forward attention runs again only there
    assert plain[attention] == 0

    def matmul_calls(counts):
        return counts[torch.ops.aten.mm.default] + counts[torch.ops.aten.addmm.default]

    kept = {policy: matmul_calls(counts) for policy, (_, counts) in runs.items()}
    assert matmul_calls(plain) == kept["save_attention_and_matmuls"] < kept["save_attention_and_narrow_matmuls"] < kept["save_attention"]


def test_checkpoint_blocks_checkpoints_only_the_first_blocks():
    attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    reference, every = gradients_and_backward_ops("block")
    grads, first = gradients_and_backward_ops("block", blocks=1)
    torch.testing.assert_close(grads, reference)
    assert 0 < first[attention] * CONFIG.num_layers == every[attention]  # each block runs the same attentions


def test_checkpointing_keeps_state_dict_keys_and_inference():
    plain, checkpointed = model_with_live_audio(), model_with_live_audio()
    apply_activation_checkpointing(checkpointed, TrainConfig(checkpoint_policy="save_attention", checkpoint_blocks=2))
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    assert checkpointed.base_parameter_names() == plain.base_parameter_names()
    checkpointed.load_state_dict(plain.state_dict(), strict=True)  # and back: checkpoints load either way
    plain.load_state_dict(checkpointed.state_dict(), strict=True)
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(checkpointed(**inputs, gate=AudioGate("global")).velocity,
                                   plain(**inputs, gate=AudioGate("global")).velocity)


def test_unknown_checkpoint_policy_is_refused():
    with pytest.raises(ValueError, match="checkpoint_policy"):
        apply_activation_checkpointing(model_with_live_audio(), TrainConfig(checkpoint_policy="save_everything"))
