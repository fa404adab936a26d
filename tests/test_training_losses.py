"""Focal mask loss, the low-confidence frame flag, and the flow-matching schedule."""
import math

import torch

from training.flow import add_noise, inference_sigmas, shift_sigmas, velocity_target
from training.losses import focal_loss, mask_loss, token_validity
from training.testing import single_torch_thread  # noqa: F401


def test_focal_loss_matches_the_formula():
    logits = torch.tensor([math.log(9.0), math.log(9.0), 0.0])  # p = 0.9, 0.9, 0.5
    targets = torch.tensor([1.0, 0.0, 1.0])
    loss = focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    expected = torch.tensor([
        0.25 * 0.1**2 * -math.log(0.9),  # confident and right: alpha for positives, tiny weight
        0.75 * 0.9**2 * -math.log(0.1),  # confident and wrong: 1 - alpha for negatives, large weight
        0.25 * 0.5**2 * -math.log(0.5),
    ])
    torch.testing.assert_close(loss, expected)


def test_low_confidence_frames_are_left_out_of_the_mask_loss():
    batch, layers, refs, frames, tokens = 2, 3, 2, 4, 6
    conf = torch.ones(batch, refs, frames)
    conf[0, 1, 2] = 0.3  # identity 1 of sample 0: frame 2 flagged
    valid = token_validity(conf, tokens)
    targets = torch.randint(0, 2, (batch, refs, frames * tokens)).float()
    logits = torch.randn(batch, layers, refs, frames * tokens, requires_grad=True)
    loss = mask_loss(logits, targets, valid, 0.25, 2.0)
    loss.backward()
    flagged = slice(2 * tokens, 3 * tokens)
    assert torch.count_nonzero(logits.grad[0, :, 1, flagged]) == 0
    assert torch.count_nonzero(logits.grad[0, :, 0, flagged]) > 0  # other identities keep the frame

    changed = logits.detach().clone()
    changed[0, :, 1, flagged] += 10.0  # whatever is predicted in the flagged frame
    torch.testing.assert_close(mask_loss(changed, targets, valid, 0.25, 2.0), loss.detach())
    kept = valid[:, None].expand_as(logits)
    per_token = focal_loss(logits, targets[:, None].expand_as(logits), 0.25, 2.0)
    positives = targets[:, None].expand_as(logits)[kept].sum()
    torch.testing.assert_close(loss, per_token[kept].sum() / positives)  # normalised by valid positives


def test_all_flagged_gives_zero_mask_loss_with_a_graph():
    logits = torch.randn(1, 2, 1, 8, requires_grad=True)
    valid = token_validity(torch.full((1, 1, 2), 0.1), 4)
    loss = mask_loss(logits, torch.ones(1, 1, 8), valid, 0.25, 2.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_flow_matching_schedule():
    clean, noise = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(add_noise(clean, noise, torch.tensor([0.0, 1.0])), torch.stack([clean[0], noise[1]]))
    torch.testing.assert_close(velocity_target(clean, noise), noise - clean)
    torch.testing.assert_close(shift_sigmas(torch.tensor(0.5), 5.0), torch.tensor(2.5 / 3.0))
    sigmas = inference_sigmas(50, 5.0)
    assert len(sigmas) == 51 and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert sigmas[25] > 0.8  # the shift spends most steps at high noise
