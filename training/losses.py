"""Training losses: flow matching on video latents and focal loss on the predicted masks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

CONFIDENCE_THRESHOLD = 0.5  # frames whose mask confidence is below this are left out of the mask loss


def flow_matching_loss(velocity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(velocity.float(), target.float())


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise binary focal loss: -alpha_t (1 - p_t)^gamma log p_t (Lin et al.), float32."""
    logits, targets = logits.float(), targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * bce


def token_validity(conf: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """[B, N, T_lat] confidences -> [B, N, T_lat * tokens_per_frame] bool, False in low-confidence frames."""
    return (conf >= CONFIDENCE_THRESHOLD).repeat_interleave(tokens_per_frame, dim=-1)


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of every predictor layer's masks over valid tokens, normalised by the number of valid
    positive tokens (RetinaNet's convention: a mean over all tokens, mostly easy background, would
    shrink the mask term to a few percent of the flow-matching term it is weighted 1:1 against).

    mask_logits [B, layers, N, Lv]; targets and valid [B, N, Lv]. Zero (with a graph) when no token is
    valid, so a batch of flagged frames still trains the flow-matching part.
    """
    expanded_targets = targets[:, None].expand_as(mask_logits)
    per_token = focal_loss(mask_logits, expanded_targets, alpha, gamma)
    weights = valid[:, None].expand_as(per_token).float()
    positives = (expanded_targets * weights).sum()
    return (per_token * weights).sum() / positives.clamp(min=1.0)
