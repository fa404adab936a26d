"""Audio features at 50 Hz: wav2vec 2.0 from a local transformers folder, or log-mel (no weights).

Features are computed once per sample and audio track and kept in `audio.cache_dir`
(`<encoder>/<key>-<track>.npy`, float16), then resampled to the video frame rate. wav2vec2 features are
the model's last hidden state on the mean/variance-normalised waveform (what Wav2Vec2FeatureExtractor
does with do_normalize). The featurizer builds its encoder on first use, so it can be handed to
DataLoader workers.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from training.config import AudioConfig

SAMPLE_RATE = 16000
FEATURE_HZ = 50  # wav2vec2's conv stack has stride 320 at 16 kHz; log-mel uses the same hop


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters, evenly spaced on the HTK mel scale."""
    def to_mel(hz):
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mel_points = torch.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)[:, None]
    lower, center, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (bins - lower) / (center - lower)
    falling = (upper - bins) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMelEncoder:
    name = "logmel"

    def __init__(self, n_mels: int):
        self.n_fft, self.hop = 1024, SAMPLE_RATE // FEATURE_HZ
        self.filters = mel_filterbank(n_mels, self.n_fft, SAMPLE_RATE)
        self.dim = n_mels

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        audio = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        spectrum = torch.stft(audio, self.n_fft, self.hop, window=torch.hann_window(self.n_fft), return_complex=True).abs() ** 2
        frames = len(audio) // self.hop
        return torch.log(spectrum.T[:frames] @ self.filters + 1e-6).numpy()


class Wav2Vec2Encoder:
    name = "wav2vec2"

    def __init__(self, path: str, device: str | torch.device = "cpu"):
        from transformers import Wav2Vec2Model

        self.model = Wav2Vec2Model.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        audio = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        audio = (audio - audio.mean()) / torch.sqrt(audio.var() + 1e-7)
        hidden = self.model(audio[None].to(self.device)).last_hidden_state[0]
        return hidden.float().cpu().numpy()


def build_audio_encoder(config: AudioConfig, device: str | torch.device = "cpu"):
    if config.encoder == "logmel":
        return LogMelEncoder(config.n_mels)
    if config.encoder == "wav2vec2":
        if not config.checkpoint:
            raise ValueError("audio.encoder wav2vec2 needs audio.checkpoint (a local folder)")
        return Wav2Vec2Encoder(config.checkpoint, device)
    raise ValueError(f"unknown audio encoder {config.encoder!r}")


class AudioFeaturizer:
    """50 Hz features of a waveform, cached on disk by (sample key, track name)."""

    def __init__(self, config: AudioConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = device
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = build_audio_encoder(self.config, self.device)
        return self._encoder

    def features(self, waveform: np.ndarray, key: str | None = None, track: str | None = None) -> np.ndarray:
        """[S] float waveform at 16 kHz -> [about S / 320, C] float32."""
        cache = self._cache_path(key, track)
        if cache is not None and cache.exists():
            return np.load(cache).astype(np.float32)
        feats = self.encoder(waveform)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            temporary = cache.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(temporary, feats.astype(np.float16))
            temporary.replace(cache)  # atomic: workers may race on the same sample
        return feats

    def _cache_path(self, key: str | None, track: str | None) -> Path | None:
        if not self.config.cache_dir or key is None:
            return None
        return Path(self.config.cache_dir) / self.config.encoder / f"{key}-{track}.npy"


def features_at_frames(features: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Linear interpolation of 50 Hz features [S50, C] at frame_times (seconds) -> [T, C]."""
    position = np.clip(frame_times * FEATURE_HZ, 0, len(features) - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(features) - 1)
    weight = (position - lower)[:, None]
    return ((1 - weight) * features[lower] + weight * features[upper]).astype(np.float32)
