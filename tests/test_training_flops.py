"""The analytic FLOP count behind the throughput bench's MFU agrees with torch's FLOP counter."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from training.dit import AudioGate, InterActDiT
from training.flops import StepShape, forward_flops
from training.testing import micro_config, single_torch_thread  # noqa: F401


def test_forward_flops_match_the_flop_counter():
    config = micro_config().model
    model = InterActDiT(config).eval()
    batch, refs, frames, height, width = 1, 2, 3, 8, 16
    inputs = (
        torch.randn(batch, config.in_dim, frames, height, width), torch.tensor([500.0]),
        torch.randn(batch, config.text_len, config.text_dim), torch.randn(batch, refs, config.in_dim, 1, 6, 4),
        torch.randn(batch, refs, frames, 4, config.audio_dim), torch.randn(batch, frames, 4, config.audio_dim),
    )
    gate = AudioGate("masks", torch.ones(batch, refs, frames * height * width // 4))
    # The math backend decomposes attention into matmuls the counter sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(*inputs, gate)
    counted = counter.get_total_flops()
    analytic = sum(forward_flops(config, StepShape(batch, frames, height, width, refs, 6, 4, config.text_len, 4)).values())
    assert abs(counted - analytic) / counted < 0.005  # what is left out: the per-sample timestep MLPs
