"""SyncNet (Chung & Zisserman, 2016) audio-visual sync scoring, reimplemented from
joonson/syncnet_python: SyncNetModel.py (class S) and SyncNetInstance.py (evaluate, calc_pdist).

The module layout reproduces the state-dict keys of the released syncnet_v2.model
(netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*; the Sequential indices count the ReLU and
pooling layers), so that file loads strictly.

Inputs: 5-frame windows of 224x224 face crops at 25 fps, BGR 0-255 as cv2.imread gives them
(no normalisation), against 20-row windows (0.2 s) of 13-coefficient MFCC at 100 fps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EMBED_DIM = 1024
FRAMES_PER_WINDOW = 5
MFCC_ROWS_PER_WINDOW = 20
MFCC_ROWS_PER_FRAME = 4
DEFAULT_VSHIFT = 15  # offsets searched: -15..+15 frames (LatentSync; syncnet_python defaults 15)


def _conv_block(conv: nn.Module, channels: int, bn, pool: nn.Module | None) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)] + ([pool] if pool is not None else [])


def _audio_trunk() -> nn.Sequential:
    """[N, 1, 13, 20] MFCC window -> [N, 512, 1, 1]."""
    bn = nn.BatchNorm2d
    return nn.Sequential(
        *_conv_block(nn.Conv2d(1, 64, 3, padding=1), 64, bn, nn.MaxPool2d(1, 1)),
        *_conv_block(nn.Conv2d(64, 192, 3, padding=1), 192, bn, nn.MaxPool2d(3, (1, 2))),
        *_conv_block(nn.Conv2d(192, 384, 3, padding=1), 384, bn, None),
        *_conv_block(nn.Conv2d(384, 256, 3, padding=1), 256, bn, None),
        *_conv_block(nn.Conv2d(256, 256, 3, padding=1), 256, bn, nn.MaxPool2d(3, 2)),
        *_conv_block(nn.Conv2d(256, 512, (5, 4)), 512, bn, None),
    )


def _lip_trunk() -> nn.Sequential:
    """[N, 3, 5, 224, 224] BGR window -> [N, 512, 1, 1, 1]."""
    bn = nn.BatchNorm3d
    pool = nn.MaxPool3d
    return nn.Sequential(
        *_conv_block(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn, pool((1, 3, 3), (1, 2, 2))),
        *_conv_block(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn,
                     pool((1, 3, 3), (1, 2, 2), (0, 1, 1))),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn, None),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn, None),
        *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn,
                     pool((1, 3, 3), (1, 2, 2))),
        *_conv_block(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn, None),
    )


def _embedding_head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNet(nn.Module):
    """Two-stream network embedding a 0.2 s MFCC window and the 5 video frames it spans."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _embedding_head(embed_dim)
        self.netcnnlip = _lip_trunk()
        self.netfclip = _embedding_head(embed_dim)

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """[N, 1, 13, 20] -> [N, embed_dim]."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_lips(self, bgr_windows: torch.Tensor) -> torch.Tensor:
        """[N, 3, 5, 224, 224] float BGR 0-255 -> [N, embed_dim]."""
        return self.netfclip(self.netcnnlip(bgr_windows).flatten(1))


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNet:
    """Build SyncNet and load a syncnet_v2.model-layout state dict, in eval mode.

    Every key and shape must match, except that BatchNorm's num_batches_tracked counters may be
    absent (checkpoints from before PyTorch 0.4.1 lack them; eval mode never reads them).
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = SyncNet()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} is not a SyncNet state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval().to(device)


@torch.inference_mode()
def embed_track(model: SyncNet, rgb_crops: np.ndarray, mfcc: np.ndarray, batch_size: int = 20
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings [N, D] of every window of a track, as SyncNetInstance.evaluate
    makes them: rgb_crops [T, 224, 224, 3] uint8 RGB, mfcc [>= 4T - 4, 13]; window i covers frames
    [i, i + 5) and MFCC rows [4i, 4i + 20), for i < T - 5 (the original stops one window short)."""
    device = next(model.parameters()).device
    n_windows = min(len(rgb_crops), len(mfcc) // MFCC_ROWS_PER_FRAME) - FRAMES_PER_WINDOW
    if n_windows <= 0:
        embed_dim = model.netfclip[-1].out_features
        return torch.zeros(0, embed_dim), torch.zeros(0, embed_dim)
    # [3, T, 224, 224] BGR: the original reads its frames with cv2.imread.
    video = torch.from_numpy(np.ascontiguousarray(rgb_crops[..., ::-1])).permute(3, 0, 1, 2)
    audio = torch.from_numpy(np.ascontiguousarray(mfcc.T, dtype=np.float32))
    lips, sounds = [], []
    for first in range(0, n_windows, batch_size):
        starts = range(first, min(first + batch_size, n_windows))
        frames = torch.stack([video[:, i:i + FRAMES_PER_WINDOW] for i in starts]).float()
        rows = torch.stack([audio[None, :, MFCC_ROWS_PER_FRAME * i:
                                  MFCC_ROWS_PER_FRAME * i + MFCC_ROWS_PER_WINDOW] for i in starts])
        lips.append(model.embed_lips(frames.to(device)).cpu())
        sounds.append(model.embed_audio(rows.to(device)).cpu())
    return torch.cat(lips), torch.cat(sounds)


def distance_table(lips: torch.Tensor, sounds: torch.Tensor, vshift: int = DEFAULT_VSHIFT
                   ) -> np.ndarray:
    """calc_pdist: [N, 2*vshift + 1] distances; entry [i, j] compares window i's lips with the audio
    window i + j - vshift (a zero embedding beyond the track), so column vshift is no shift."""
    padded = F.pad(sounds, (0, 0, vshift, vshift))
    n_windows = len(lips)
    columns = [F.pairwise_distance(lips, padded[j:j + n_windows]) for j in range(2 * vshift + 1)]
    return torch.stack(columns, dim=1).numpy()


@dataclass(frozen=True)
class SyncScore:
    """offset: syncnet_python's AV offset, vshift - argmin: the best match pairs video window i
    with audio window i - offset;
    sync_d: the smallest mean distance over offsets (Sync-D, lower is better);
    sync_c: median minus smallest mean distance (Sync-C, confidence, higher is better)."""

    offset: int
    sync_d: float
    sync_c: float
    n_windows: int


def sync_score(distances: np.ndarray) -> SyncScore | None:
    """Sync-C / Sync-D / offset from a [N, 2*vshift + 1] distance table, None when N is 0.
    The median is torch.median's (the lower middle value), as in the original."""
    if len(distances) == 0:
        return None
    mean_distance = distances.mean(axis=0)
    best = int(np.argmin(mean_distance))
    median = np.sort(mean_distance)[(len(mean_distance) - 1) // 2]
    vshift = (distances.shape[1] - 1) // 2
    return SyncScore(offset=vshift - best, sync_d=float(mean_distance[best]),
                     sync_c=float(median - mean_distance[best]), n_windows=len(distances))
