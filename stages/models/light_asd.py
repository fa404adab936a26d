"""Light-ASD active speaker detection (Liao et al., CVPR 2023), reimplemented from
Junhua-Liao/Light-ASD (model/Encoder.py, model/Classifier.py, model/Model.py, loss.py) and the
windowed scoring of Columbia_test.py's evaluate_network.

Module and attribute names follow the released checkpoints' key layout (model.visualEncoder.*,
model.audioEncoder.*, model.GRU.*, lossAV.FC.*, lossV.FC.*) so they load strictly.

Inputs: 25 fps grayscale face crops uint8 [T, 112, 112] and 13-coefficient MFCC at 100 fps [4T, 13]
(see stages/models/audio_features.py). Output: the class-1 logit of lossAV.FC per video frame;
> 0 means speaking.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EMBED_DIM = 128
AUDIO_ROWS_PER_FRAME = 4  # MFCC at 100 fps against video at 25 fps
VIDEO_FPS = 25
GRAY_MEAN, GRAY_STD = 0.4161, 0.1688
# Columbia_test.py writes {1,1,1,2,2,2,3,3,4,5,6}, a Python set: the effective durations, equally weighted.
EVALUATE_DURATIONS_S = (1, 2, 3, 4, 5, 6)


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=0.001)


def _bn3d(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, momentum=0.01, eps=0.001)


class AudioBlock(nn.Module):
    """Two factorised branches (3- and 5-tap along MFCC bins, then along time), summed, then 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.m_3 = nn.Conv2d(in_channels, out_channels, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = _bn2d(out_channels)
        self.t_3 = nn.Conv2d(out_channels, out_channels, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = _bn2d(out_channels)
        self.m_5 = nn.Conv2d(in_channels, out_channels, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = _bn2d(out_channels)
        self.t_5 = nn.Conv2d(out_channels, out_channels, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = _bn2d(out_channels)
        self.last = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_last = _bn2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x3 = self.relu(self.bn_t_3(self.t_3(self.relu(self.bn_m_3(self.m_3(x))))))
        x5 = self.relu(self.bn_t_5(self.t_5(self.relu(self.bn_m_5(self.m_5(x))))))
        return self.relu(self.bn_last(self.last(x3 + x5)))


class VisualBlock(nn.Module):
    """Two factorised 3D branches (3x3 / 5x5 spatial, then 3- / 5-tap temporal), summed, then 1x1x1.
    The first block of the encoder halves the spatial size in its spatial convs. Inference only:
    the BatchNorms use their running statistics (see _conv_bn_relu)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False):
        super().__init__()
        stride = (1, 2, 2) if downsample else (1, 1, 1)
        self.s_3 = nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride, (0, 1, 1), bias=False)
        self.bn_s_3 = _bn3d(out_channels)
        self.t_3 = nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = _bn3d(out_channels)
        self.s_5 = nn.Conv3d(in_channels, out_channels, (1, 5, 5), stride, (0, 2, 2), bias=False)
        self.bn_s_5 = _bn3d(out_channels)
        self.t_5 = nn.Conv3d(out_channels, out_channels, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = _bn3d(out_channels)
        self.last = nn.Conv3d(out_channels, out_channels, 1, bias=False)
        self.bn_last = _bn3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x3 = _conv_bn_relu(self.t_3, self.bn_t_3, _conv_bn_relu(self.s_3, self.bn_s_3, x))
        x5 = _conv_bn_relu(self.t_5, self.bn_t_5, _conv_bn_relu(self.s_5, self.bn_s_5, x))
        return _conv_bn_relu(self.last, self.bn_last, x3.add_(x5))


def _conv_bn_relu(conv: nn.Conv3d, bn: nn.BatchNorm3d, x: torch.Tensor) -> torch.Tensor:
    """relu(bn(conv(x))) with eval-mode BatchNorm folded into the conv's weights and the ReLU in
    place: the same values, without two more full-size tensors per layer, which cost as much as the
    convs on CPU. Temporal (k, 1, 1) convs run as Conv2d over [B, C, T, H*W]: the same sums, 2-3x
    faster on CPU, where PyTorch has no fast Conv3d kernel for that shape."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.kernel_size[0] > 1 and conv.kernel_size[1:] == (1, 1):
        b, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(b, c, t, h * w), weight.squeeze(-1), bias, padding=(conv.padding[0], 0))
        y = y.reshape(b, -1, t, h, w)
    else:
        y = F.conv3d(x, weight, bias, conv.stride, conv.padding)
    return F.relu_(y)


class AudioEncoder(nn.Module):
    """[B, 1, 13, 4T] MFCC -> [B, T, 128]: time is pooled by 4, MFCC bins are averaged."""

    def __init__(self):
        super().__init__()
        self.block1 = AudioBlock(1, 32)
        self.pool1 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block2 = AudioBlock(32, 64)
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block3 = AudioBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        return x.mean(dim=2).transpose(1, 2)


class VisualEncoder(nn.Module):
    """[B, 1, T, 112, 112] normalised gray -> [B, T, 128]: spatial max over the last feature map."""

    def __init__(self):
        super().__init__()
        self.block1 = VisualBlock(1, 32, downsample=True)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block2 = VisualBlock(32, 64)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block3 = VisualBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        return x.amax(dim=(3, 4)).transpose(1, 2)


class BidirectionalGRU(nn.Module):
    """Two unidirectional GRUs: forward in time, then (after GELU) backward in time, then GELU."""

    def __init__(self, channels: int):
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, batch_first=True)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.gru_forward(x)[0])
        x = self.gru_backward(x.flip(1))[0].flip(1)
        return self.gelu(x)


class ASDBackbone(nn.Module):
    """Audio and visual encoders fused by addition and a bidirectional GRU."""

    def __init__(self):
        super().__init__()
        self.visualEncoder = VisualEncoder()
        self.audioEncoder = AudioEncoder()
        self.GRU = BidirectionalGRU(EMBED_DIM)

    def embed_visual(self, gray: torch.Tensor) -> torch.Tensor:
        """gray: [B, T, 112, 112] float with uint8 values -> [B, T, 128]."""
        x = (gray.unsqueeze(1) / 255 - GRAY_MEAN) / GRAY_STD
        return self.visualEncoder(x)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: [B, 4T, 13] -> [B, T, 128]."""
        return self.audioEncoder(mfcc.unsqueeze(1).transpose(2, 3))

    def fuse(self, embed_audio: torch.Tensor, embed_visual: torch.Tensor) -> torch.Tensor:
        """-> [B*T, 128] audio-visual features."""
        return self.GRU(embed_audio + embed_visual).reshape(-1, EMBED_DIM)


class SpeakingHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.FC = nn.Linear(EMBED_DIM, 2)


class LightASD(nn.Module):
    """The whole checkpoint: backbone, audio-visual head (the score) and the visual-only head
    (a training auxiliary, loaded for strictness but unused in scoring)."""

    def __init__(self):
        super().__init__()
        self.model = ASDBackbone()
        self.lossAV = SpeakingHead()
        self.lossV = SpeakingHead()

    def forward(self, mfcc: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
        """mfcc [B, 4T, 13], gray [B, T, 112, 112] -> speaking logits [B, T]."""
        fused = self.model.fuse(self.model.embed_audio(mfcc), self.model.embed_visual(gray))
        return self.lossAV.FC(fused)[:, 1].reshape(gray.shape[0], gray.shape[1])


def load_light_asd(path: str | Path, device: str = "cpu") -> LightASD:
    """Build Light-ASD and load a released checkpoint strictly (every key, every shape), in eval mode."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    model = LightASD()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


# Each visual block has a 5-tap temporal conv (+-2 frames) and the rest is per frame, so a visual
# embedding depends on input frames within +-6 of it: inside a window it differs from the
# whole-track embedding only within 6 frames of the window's ends (where the window's zero
# padding is seen). Windowed scoring reuses one whole-track pass and recomputes only those ends.
VISUAL_TEMPORAL_RADIUS = 6

Window = tuple[int, int]


def evaluate_windows(n_frames: int, durations_s: Sequence[int] = EVALUATE_DURATIONS_S
                     ) -> list[Window]:
    """evaluate_network's windows: for each duration, consecutive [start, end) frame ranges of that
    many seconds covering the track, the last one shorter."""
    windows = []
    for duration in durations_s:
        step = duration * VIDEO_FPS
        windows += [(start, min(start + step, n_frames)) for start in range(0, n_frames, step)]
    return windows


def _batched(fn, inputs: list, max_batch_frames: int) -> list:
    """fn over a list of equal-or-unequal length tensors [L, ...], stacking equal lengths into
    batches of at most max_batch_frames frames; outputs in input order."""
    by_length: dict[int, list[int]] = {}
    for index, tensor in enumerate(inputs):
        by_length.setdefault(len(tensor), []).append(index)
    results = [None] * len(inputs)
    for length, indices in by_length.items():
        per_batch = max(1, max_batch_frames // max(length, 1))
        for first in range(0, len(indices), per_batch):
            chunk = indices[first:first + per_batch]
            for index, out in zip(chunk, fn(torch.stack([inputs[i] for i in chunk]))):
                results[index] = out
    return results


def _whole_track_visual(backbone: ASDBackbone, gray: torch.Tensor, max_batch_frames: int
                        ) -> torch.Tensor:
    """[T, 128] visual embeddings of the whole track, in chunks overlapping by the radius."""
    radius, n_frames = VISUAL_TEMPORAL_RADIUS, len(gray)
    chunk = max(max_batch_frames - 2 * radius, 1)
    parts = []
    for start in range(0, n_frames, chunk):
        end = min(start + chunk, n_frames)
        lo, hi = max(0, start - radius), min(n_frames, end + radius)
        parts.append(backbone.embed_visual(gray[None, lo:hi])[0, start - lo:end - lo])
    return torch.cat(parts)


def _windowed_visual(backbone: ASDBackbone, gray: torch.Tensor, windows: list[Window],
                     max_batch_frames: int) -> list[torch.Tensor]:
    """Each window's visual embeddings, as a pass over that window alone gives them."""
    radius, n_frames = VISUAL_TEMPORAL_RADIUS, len(gray)
    whole = _whole_track_visual(backbone, gray, max_batch_frames)
    is_long = [e - s >= 2 * radius for s, e in windows]
    starts = sorted({s for (s, _), long in zip(windows, is_long) if long and s > 0})
    ends = sorted({e for (_, e), long in zip(windows, is_long) if long and e < n_frames})
    short = [w for w, long in zip(windows, is_long) if not long]
    segments = [(s, s + 2 * radius) for s in starts] + [(e - 2 * radius, e) for e in ends] + short
    embedded = _batched(backbone.embed_visual, [gray[a:b] for a, b in segments], max_batch_frames)
    heads = {s: emb[:radius] for s, emb in zip(starts, embedded)}
    tails = {e: emb[radius:] for e, emb in zip(ends, embedded[len(starts):])}
    short_embedded = dict(zip(short, embedded[len(starts) + len(ends):]))
    return [torch.cat([heads.get(s, whole[s:s + radius]), whole[s + radius:e - radius],
                       tails.get(e, whole[e - radius:e])]) if long else short_embedded[(s, e)]
            for (s, e), long in zip(windows, is_long)]


@torch.inference_mode()
def window_scores(model: LightASD, mfcc: np.ndarray, gray: np.ndarray, windows: Iterable[Window],
                  max_batch_frames: int = 256) -> dict[Window, np.ndarray]:
    """Speaking logits of each [start, end) frame window of a track (mfcc [>= 4 * end, 13],
    gray uint8 [>= end, 112, 112]), each window scored as an independent sequence.

    Equal to one forward pass per window up to float rounding; the visual work is shared (see
    VISUAL_TEMPORAL_RADIUS) and windows of equal length run as one batch, at most
    max_batch_frames frames per forward pass.
    """
    windows = sorted(set(windows))
    if not windows:
        return {}
    device = next(model.parameters()).device
    n_frames = max(end for _, end in windows)
    mfcc_t = torch.from_numpy(np.ascontiguousarray(mfcc[:n_frames * AUDIO_ROWS_PER_FRAME],
                                                   dtype=np.float32)).to(device)
    gray_t = torch.from_numpy(np.ascontiguousarray(gray[:n_frames])).float().to(device)
    backbone = model.model
    visual = _windowed_visual(backbone, gray_t, windows, max_batch_frames)
    audio = _batched(backbone.embed_audio, [
        mfcc_t[s * AUDIO_ROWS_PER_FRAME:e * AUDIO_ROWS_PER_FRAME] for s, e in windows],
        max_batch_frames * AUDIO_ROWS_PER_FRAME)
    fused = _batched(backbone.GRU, [a + v for a, v in zip(audio, visual)], max_batch_frames)
    return {window: model.lossAV.FC(features)[:, 1].cpu().numpy()
            for window, features in zip(windows, fused)}


def per_duration_scores(model: LightASD, mfcc: np.ndarray, gray: np.ndarray,
                        durations_s: Sequence[int] = EVALUATE_DURATIONS_S,
                        max_batch_frames: int = 256) -> np.ndarray:
    """[len(durations_s), n] float32: for each duration, the track cut into consecutive windows of
    that many seconds (the last one shorter), each scored as an independent sequence, as
    Columbia_test.evaluate_network does; n = min(NV, NA // 4) usable frames of the track
    (mfcc [NA, 13], gray uint8 [NV, 112, 112])."""
    n_frames = min(len(gray), len(mfcc) // AUDIO_ROWS_PER_FRAME)
    logits = window_scores(model, mfcc, gray, evaluate_windows(n_frames, durations_s),
                           max_batch_frames)
    rows = [[logits[w] for w in evaluate_windows(n_frames, (d,))] for d in durations_s]
    return np.stack([np.concatenate(row) if row else np.zeros(0, np.float32) for row in rows])


def score_track(model: LightASD, mfcc: np.ndarray, gray: np.ndarray,
                durations_s: Sequence[int] = EVALUATE_DURATIONS_S,
                max_batch_frames: int = 256) -> np.ndarray:
    """Per-frame speaking logits of one track, float32 [n]: evaluate_network's score, the mean of
    per_duration_scores over the durations (before its final rounding to 0.1)."""
    return per_duration_scores(model, mfcc, gray, durations_s, max_batch_frames).mean(axis=0)
