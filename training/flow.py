"""Rectified flow: z_t = (1 - t) z_0 + t eps, the model predicts the velocity eps - z_0.

Wan2.1 feeds the DiT timesteps t * 1000 and shifts t towards the noisy end,
t' = shift t / (1 + (shift - 1) t), both in training and sampling.
"""
from __future__ import annotations

import torch

TIMESTEP_SCALE = 1000.0


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_training_sigmas(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    uniform = torch.rand(batch, generator=generator)
    return shift_sigmas(uniform, shift)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    sigma = sigmas.to(clean.device, clean.dtype).view(-1, *([1] * (clean.dim() - 1)))
    return (1 - sigma) * clean + sigma * noise


def velocity_target(clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - clean


def inference_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 noise levels from 1 to 0; an Euler step goes from sigmas[k] to sigmas[k + 1]."""
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), shift)


def euler_step(latents: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return latents + (sigma_next - sigma) * velocity
