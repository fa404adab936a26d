"""Silero VAD (snakers4/silero-vad, MIT licence, the PyPI wheel `silero-vad` 6.2.3): speech
probability per 32 ms of 16 kHz audio, and the speech segments those probabilities give.

The weights are the ONNX model shipped inside the installed wheel (silero_vad/data/silero_vad.onnx,
opset 16); nothing is downloaded. It runs in onnxruntime one 512-sample chunk at a time, carrying
the recurrent state and the 64-sample context from chunk to chunk exactly as the package's
OnnxWrapper.__call__ does (utils_vad.py): each call sees the previous chunk's last 64 samples
followed by the chunk, zeros before the first chunk, and the last chunk is zero-padded.
Probabilities become segments through the package's own state machine,
get_speech_timestamps_from_probs (hysteresis threshold, minimum speech and silence durations,
padding), the same code its get_speech_timestamps runs.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512  # 32 ms: the model's frame at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous chunk prepended to each chunk
CHUNK_S = CHUNK_SAMPLES / SAMPLE_RATE
STATE_SHAPE = (2, 1, 128)
MODEL_FILE = "silero_vad.onnx"


def packaged_model_path(name: str = MODEL_FILE) -> Path:
    """The ONNX file inside the installed silero-vad wheel, found without importing the package
    (its __init__ imports torch and sets torch's thread count)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed silero-vad package")
    return path


def as_float_audio(wav16k: np.ndarray) -> np.ndarray:
    """float32 samples in [-1, 1): int16 PCM is scaled by 1/32768, float input is kept."""
    wav = np.asarray(wav16k).reshape(-1)
    if wav.dtype == np.int16:
        return wav.astype(np.float32) / 32768.0
    return wav.astype(np.float32)


class SileroVad:
    """The Silero VAD ONNX model in onnxruntime on the CPU, `num_threads` intra-op threads."""

    def __init__(self, path: str | Path | None = None, num_threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path or packaged_model_path()), sess_options=options,
                                            providers=["CPUExecutionProvider"])

    def speech_probability(self, wav16k: np.ndarray) -> np.ndarray:
        """float32 [ceil(n / 512)]: the speech probability of each 32 ms chunk of 16 kHz mono audio
        (int16 PCM or float in [-1, 1]); chunk i covers samples [512 i, 512 (i + 1))."""
        audio = as_float_audio(wav16k)
        n_chunks = -(-len(audio) // CHUNK_SAMPLES)
        padded = np.zeros(n_chunks * CHUNK_SAMPLES + CONTEXT_SAMPLES, dtype=np.float32)
        padded[CONTEXT_SAMPLES:CONTEXT_SAMPLES + len(audio)] = audio
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        probs = np.empty(n_chunks, dtype=np.float32)
        for index in range(n_chunks):
            start = index * CHUNK_SAMPLES  # the context, then the chunk
            x = padded[None, start:start + CONTEXT_SAMPLES + CHUNK_SAMPLES]
            out, state = self.session.run(None, {"input": x, "state": state, "sr": rate})
            probs[index] = out[0, 0]
        return probs


@dataclass(frozen=True)
class SegmentRule:
    """How probabilities become speech segments (silero's get_speech_timestamps parameters):
    speech starts at `threshold` and ends below `neg_threshold` (None: threshold - 0.15) held for
    `min_silence_s`; segments shorter than `min_speech_s` are dropped; each is padded by `pad_s`."""

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03


def speech_segments(probs: np.ndarray, n_samples: int, rule: SegmentRule = SegmentRule()
                    ) -> list[tuple[float, float]]:
    """[(start, end)] seconds of speech in audio of `n_samples` 16 kHz samples whose chunk
    probabilities are `probs`, by the package's get_speech_timestamps_from_probs."""
    if n_samples == 0 or len(probs) == 0:
        return []
    found = _package_segmenter()(
        [float(p) for p in probs], sampling_rate=SAMPLE_RATE, threshold=rule.threshold,
        neg_threshold=rule.neg_threshold, min_speech_duration_ms=round(rule.min_speech_s * 1000),
        min_silence_duration_ms=round(rule.min_silence_s * 1000), speech_pad_ms=round(rule.pad_s * 1000),
        audio_length_samples=n_samples)
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)) for s in found]


def _package_segmenter():
    """silero_vad.utils_vad.get_speech_timestamps_from_probs, imported without the package's
    side effect on torch's thread count (silero_vad/model.py calls torch.set_num_threads(1))."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return get_speech_timestamps_from_probs


def frames_in_segments(segments: list[tuple[float, float]], n_frames: int, fps: float
                       ) -> np.ndarray:
    """bool [n_frames]: frame k (covering [k / fps, (k + 1) / fps)) is in a segment when its
    centre is."""
    centres = (np.arange(n_frames) + 0.5) / fps
    active = np.zeros(n_frames, dtype=bool)
    for start, end in segments:
        active |= (centres >= start) & (centres < end)
    return active
