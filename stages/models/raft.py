"""RAFT optical flow (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow",
ECCV 2020), both variants, written from the description of torchvision's
torchvision/models/optical_flow/raft.py and _utils.py.

Module and attribute names follow torchvision's `raft_large` / `raft_small` state-dict layout
(feature_encoder.*, context_encoder.*, update_block.motion_encoder.*, update_block.recurrent_block.*,
update_block.flow_head.*, mask_predictor.* for large), so torchvision's released .pth files
(Raft_Large_Weights / Raft_Small_Weights, e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth,
raft_small_C_T_V2-01064c6d.pth) load strictly. The princeton-vl checkpoints (raft-things.pth, ...)
use another layout and do not.

Input: two RGB batches [B, 3, H, W] in [-1, 1] (uint8 / 127.5 - 1: torchvision's OpticalFlow
transform), H and W divisible by 8 and at least 128 (see `pad_to_raft`). Output: the flow after the
last update, [B, 2, H, W] in pixels, channel 0 horizontal, from image1 to image2.

Checked against torchvision 0.26.0 itself (random weights, BatchNorm statistics perturbed, loaded
into both): identical state-dict keys and shapes, and identical flow on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

RaftVariant = Literal["small", "large"]
DOWNSAMPLE = 8  # feature and context maps are at 1/8 resolution
CONVEX_NEIGHBOURS = 9  # convex upsampling mixes each coarse pixel's 3x3 neighbourhood
# torchvision refuses feature maps under 16 pixels a side (inputs under 128): the 4-level pyramid
# would otherwise end in 1-pixel levels, where its coordinate normalisation divides by zero
MIN_FEATURE_SIDE = 16


@dataclass(frozen=True)
class RaftConfig:
    """The hyper-parameters torchvision's raft_large / raft_small builders pass to _raft()."""

    residual_blocks: bool  # large: ResidualBlock encoders; small: BottleneckBlock
    feature_layers: tuple[int, int, int, int, int]
    context_layers: tuple[int, int, int, int, int]
    context_batch_norm: bool  # large: BatchNorm2d in the context encoder; small: no norm at all
    corr_levels: int
    corr_radius: int
    motion_corr_layers: tuple[int, ...]
    motion_flow_layers: tuple[int, int]
    motion_out_channels: int
    hidden_size: int
    gru_kernels: tuple[tuple[int, int], ...]  # one (kh, kw) per ConvGRU, applied in turn
    flow_head_hidden: int
    convex_upsampling: bool  # large: learned mask; small: bilinear


RAFT_CONFIGS: dict[str, RaftConfig] = {
    "large": RaftConfig(
        residual_blocks=True, feature_layers=(64, 64, 96, 128, 256), context_layers=(64, 64, 96, 128, 256),
        context_batch_norm=True, corr_levels=4, corr_radius=4, motion_corr_layers=(256, 192),
        motion_flow_layers=(128, 64), motion_out_channels=128, hidden_size=128,
        gru_kernels=((1, 5), (5, 1)), flow_head_hidden=256, convex_upsampling=True),
    "small": RaftConfig(
        residual_blocks=False, feature_layers=(32, 32, 64, 96, 128), context_layers=(32, 32, 64, 96, 160),
        context_batch_norm=False, corr_levels=4, corr_radius=3, motion_corr_layers=(96,),
        motion_flow_layers=(64, 32), motion_out_channels=82, hidden_size=96,
        gru_kernels=((3, 3),), flow_head_hidden=128, convex_upsampling=False),
}

Norm = Literal["instance", "batch", None]


def conv_unit(in_channels: int, out_channels: int, kernel: int, stride: int = 1, norm: Norm = None,
              relu: bool = True) -> nn.Sequential:
    """conv (always with bias, "same" padding) -> optional norm -> optional ReLU, as an
    nn.Sequential so that the weights sit at `.0` and the norm at `.1` (torchvision's
    Conv2dNormActivation layout). InstanceNorm2d has no affine weights, so it adds no keys."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2)]
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(out_channels))
    elif norm == "batch":
        layers.append(nn.BatchNorm2d(out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv units plus a (projected when strided) shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, stride: int):
        super().__init__()
        self.convnormrelu1 = conv_unit(in_channels, out_channels, 3, stride, norm)
        self.convnormrelu2 = conv_unit(out_channels, out_channels, 3, 1, norm)
        self.downsample = (nn.Identity() if stride == 1
                           else conv_unit(in_channels, out_channels, 1, stride, norm, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    """1x1 down to a quarter of the channels, strided 3x3, 1x1 back up, plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, stride: int):
        super().__init__()
        inner = out_channels // 4
        self.convnormrelu1 = conv_unit(in_channels, inner, 1, 1, norm)
        self.convnormrelu2 = conv_unit(inner, inner, 3, stride, norm)
        self.convnormrelu3 = conv_unit(inner, out_channels, 1, 1, norm)
        self.downsample = (nn.Identity() if stride == 1
                           else conv_unit(in_channels, out_channels, 1, stride, norm, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return F.relu(self.downsample(x) + y)


class Encoder(nn.Module):
    """The feature and context encoders: a strided 7x7 stem and three two-block stages (strides
    2, 1, 2, 2 overall: 1/8 resolution), then a 1x1 projection to layers[4] channels."""

    def __init__(self, layers: tuple[int, int, int, int, int], residual: bool, norm: Norm):
        super().__init__()
        block = ResidualBlock if residual else BottleneckBlock
        self.convnormrelu = conv_unit(3, layers[0], 7, 2, norm)
        self.layer1 = nn.Sequential(block(layers[0], layers[1], norm, 1), block(layers[1], layers[1], norm, 1))
        self.layer2 = nn.Sequential(block(layers[1], layers[2], norm, 2), block(layers[2], layers[2], norm, 1))
        self.layer3 = nn.Sequential(block(layers[2], layers[3], norm, 2), block(layers[3], layers[3], norm, 1))
        self.conv = nn.Conv2d(layers[3], layers[4], 1)
        for module in self.modules():  # torchvision's initialisation, so random models are sane too
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    """Encodes the correlation features and the current flow; the flow itself is appended."""

    def __init__(self, corr_channels: int, corr_layers: tuple[int, ...], flow_layers: tuple[int, int],
                 out_channels: int):
        super().__init__()
        self.convcorr1 = conv_unit(corr_channels, corr_layers[0], 1)
        self.convcorr2 = conv_unit(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        self.convflow1 = conv_unit(2, flow_layers[0], 7)
        self.convflow2 = conv_unit(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_unit(corr_layers[-1] + flow_layers[1], out_channels - 2, 3)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        corr = self.convcorr2(self.convcorr1(corr))
        encoded_flow = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr, encoded_flow], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, kernel: tuple[int, int]):
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.convz = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=padding)
        self.convr = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=padding)
        self.convq = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=padding)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """One ConvGRU (small: 3x3) or two separable ones in turn (large: 1x5 then 5x1), named
    convgru1 and convgru2 as in the state dict."""

    def __init__(self, input_size: int, hidden_size: int, kernels: tuple[tuple[int, int], ...]):
        super().__init__()
        self.grus = [f"convgru{i + 1}" for i in range(len(kernels))]
        for name, kernel in zip(self.grus, kernels):
            self.add_module(name, ConvGRU(input_size, hidden_size, kernel))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for name in self.grus:
            h = getattr(self, name)(h, x)
        return h


class FlowHead(nn.Module):
    def __init__(self, in_channels: int, hidden_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self, config: RaftConfig):
        super().__init__()
        corr_channels = config.corr_levels * (2 * config.corr_radius + 1) ** 2
        context_channels = config.context_layers[-1] - config.hidden_size
        self.motion_encoder = MotionEncoder(corr_channels, config.motion_corr_layers, config.motion_flow_layers,
                                            config.motion_out_channels)
        self.recurrent_block = RecurrentBlock(config.motion_out_channels + context_channels, config.hidden_size,
                                              config.gru_kernels)
        self.flow_head = FlowHead(config.hidden_size, config.flow_head_hidden)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.motion_encoder(flow, corr)
        hidden = self.recurrent_block(hidden, torch.cat([context, motion], dim=1))
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """Convex-upsampling weights: 9 neighbour logits for each of the 8x8 fine pixels of a coarse one."""

    # the original scales the mask logits by 0.25 (to damp this branch's gradients); the released
    # weights were trained with it, so inference keeps it
    SCALE = 0.25

    def __init__(self, hidden_size: int):
        super().__init__()
        self.convrelu = conv_unit(hidden_size, 256, 3)
        self.conv = nn.Conv2d(256, DOWNSAMPLE * DOWNSAMPLE * CONVEX_NEIGHBOURS, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.SCALE * self.conv(self.convrelu(hidden))


class RAFT(nn.Module):
    def __init__(self, config: RaftConfig):
        super().__init__()
        self.config = config
        self.feature_encoder = Encoder(config.feature_layers, config.residual_blocks, "instance")
        self.context_encoder = Encoder(config.context_layers, config.residual_blocks,
                                       "batch" if config.context_batch_norm else None)
        self.update_block = UpdateBlock(config)
        self.mask_predictor = MaskPredictor(config.hidden_size) if config.convex_upsampling else None

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iterations: int = 12) -> torch.Tensor:
        batch, _, height, width = image1.shape
        if (image2.shape != image1.shape or height % DOWNSAMPLE or width % DOWNSAMPLE
                or min(height, width) < DOWNSAMPLE * MIN_FEATURE_SIDE):
            raise ValueError(f"RAFT needs two images of one shape with sides divisible by {DOWNSAMPLE} and at "
                             f"least {DOWNSAMPLE * MIN_FEATURE_SIDE}, got {tuple(image1.shape)} and "
                             f"{tuple(image2.shape)} (see pad_to_raft)")
        features1, features2 = self.feature_encoder(torch.cat([image1, image2])).chunk(2)
        pyramid = correlation_pyramid(features1, features2, self.config.corr_levels)
        hidden, context = self.context_encoder(image1).split(
            [self.config.hidden_size, self.config.context_layers[-1] - self.config.hidden_size], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        coords0 = pixel_grid(batch, height // DOWNSAMPLE, width // DOWNSAMPLE, image1.device)
        coords1 = coords0.clone()
        for _ in range(iterations):
            corr = lookup_pyramid(pyramid, coords1, self.config.corr_radius)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
        # torchvision upsamples after every update; only the last one is returned here
        mask = None if self.mask_predictor is None else self.mask_predictor(hidden)
        return upsample_flow(coords1 - coords0, mask)


def pixel_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """[B, 2, H, W] pixel coordinates, (x, y) in channels 0 and 1."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch, 1, 1, 1)


def correlation_pyramid(features1: torch.Tensor, features2: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """All-pairs correlation (dot products / sqrt(channels)) of every image-1 pixel with every
    image-2 pixel, as [B*H*W, 1, H, W], then average-pooled 2x2 over the image-2 dimensions
    `levels - 1` times."""
    batch, channels, height, width = features1.shape
    corr = features1.flatten(2).transpose(1, 2) @ features2.flatten(2) / channels ** 0.5
    volume = corr.reshape(batch * height * width, 1, height, width)
    pyramid = [volume]
    for _ in range(levels - 1):
        volume = F.avg_pool2d(volume, kernel_size=2, stride=2)
        pyramid.append(volume)
    return pyramid


def lookup_pyramid(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinear samples of each pyramid level on a (2r+1)^2 square around coords / 2^level, as
    [B, levels*(2r+1)^2, H, W].

    Channel order is torchvision's (from the original RAFT): within a level the x offset varies
    slowest and the y offset fastest; the released weights depend on it.
    """
    batch, _, height, width = coords.shape
    offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    dx, dy = torch.meshgrid(offsets, offsets, indexing="ij")
    window = torch.stack([dx, dy], dim=-1)[None]  # [1, 2r+1, 2r+1, (x, y)]
    centres = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
    samples = []
    for level, volume in enumerate(pyramid):
        sampled = sample_pixels(volume, centres / 2 ** level + window)
        samples.append(sampled.view(batch, height, width, -1))
    return torch.cat(samples, dim=-1).permute(0, 3, 1, 2).contiguous()


def sample_pixels(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear grid_sample at absolute pixel coordinates (x, y), zero outside."""
    height, width = image.shape[-2:]
    scale = points.new_tensor([width - 1, height - 1])
    return F.grid_sample(image, 2 * points / scale - 1, mode="bilinear", align_corners=True)


def upsample_flow(flow: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """1/8-resolution flow to full resolution, in full-resolution pixels: bilinear (small) or a
    softmax-weighted convex combination of each coarse pixel's 3x3 neighbours (large)."""
    batch, _, height, width = flow.shape
    if mask is None:
        return DOWNSAMPLE * F.interpolate(flow, size=(DOWNSAMPLE * height, DOWNSAMPLE * width),
                                          mode="bilinear", align_corners=True)
    weights = mask.view(batch, 1, CONVEX_NEIGHBOURS, DOWNSAMPLE, DOWNSAMPLE, height, width).softmax(dim=2)
    neighbours = F.unfold(DOWNSAMPLE * flow, kernel_size=3, padding=1)
    neighbours = neighbours.view(batch, 2, CONVEX_NEIGHBOURS, 1, 1, height, width)
    fine = (weights * neighbours).sum(dim=2)  # [B, 2, 8, 8, H, W]
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, DOWNSAMPLE * height, DOWNSAMPLE * width)


def build_raft(variant: RaftVariant) -> RAFT:
    """A randomly initialised RAFT of torchvision's raft_large or raft_small shape."""
    return RAFT(RAFT_CONFIGS[variant])


def load_raft(path: str | Path, variant: RaftVariant, device: str = "cpu") -> RAFT:
    """Build the variant and load a torchvision RAFT state dict strictly, in eval mode on `device`."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = build_raft(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} is not a torchvision raft_{variant} state dict (is raft_variant right? "
                         f"princeton-vl checkpoints use another layout): {str(error)[:300]}") from error
    return model.eval().to(device)


def pad_to_raft(images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad [B, C, H, W] evenly on both sides (as the original's InputPadder does) to sides
    divisible by 8 and at least 128; returns the padded batch and (left, right, top, bottom) for
    `unpad`."""
    height, width = images.shape[-2:]
    pad_h, pad_w = _padding(height), _padding(width)
    sides = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return F.pad(images, sides, mode="replicate"), sides


def _padding(side: int) -> int:
    target = max(-(-side // DOWNSAMPLE) * DOWNSAMPLE, DOWNSAMPLE * MIN_FEATURE_SIDE)
    return target - side


def unpad(flow: torch.Tensor, sides: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = sides
    height, width = flow.shape[-2:]
    return flow[..., top:height - bottom, left:width - right]


def to_raft_input(frames: np.ndarray, device: str) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] on `device` (torchvision's OpticalFlow
    transform); the uint8 frames travel, a quarter of the float bytes."""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.inference_mode()
def raft_flows(model: RAFT, firsts: np.ndarray, seconds: np.ndarray, iterations: int, device: str
               ) -> np.ndarray:
    """Flow from each of `firsts` to the matching one of `seconds` (uint8 RGB [N, H, W, 3], any size),
    as float32 [N, H, W, 2] in pixels."""
    images, sides = pad_to_raft(torch.cat([to_raft_input(firsts, device), to_raft_input(seconds, device)]))
    image1, image2 = images.chunk(2)
    flow = unpad(model(image1, image2, iterations), sides)
    return flow.permute(0, 2, 3, 1).cpu().numpy()
