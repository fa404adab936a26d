"""Cutting a window of a real video into clip bytes, as the clips stage would hand a clip on."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.io import wavfile

from stages.models.audio_features import SAMPLE_RATE


def cut_clip(path: Path, start: float, end: float) -> tuple[bytes, dict]:
    """Re-encode [start, end) of a video to H.264 mp4 bytes, as the clips stage hands a clip on."""
    out = io.BytesIO()
    with av.open(str(path)) as src, av.open(out, "w", format="mp4") as dst:
        vin = src.streams.video[0]
        rate = Fraction(vin.average_rate)
        vout = dst.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "18"})
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        n = 0
        for frame in src.decode(vin):
            if frame.time < start:
                continue
            if frame.time >= end:
                break
            frame.pts, frame.time_base = n, 1 / rate
            dst.mux(vout.encode(frame))
            n += 1
        dst.mux(vout.encode())
    clip = {"fps": float(rate), "n_frames": n, "width": vout.width, "height": vout.height,
            "has_audio": False, "duration": n / float(rate)}
    return out.getvalue(), clip


def decode_frames_25fps(path: Path, start: float, n_frames: int) -> np.ndarray:
    """[n, H, W, 3] RGB: for each k, the first frame at or after start + k / 25 (curation.frames' rule)."""
    targets = start + np.arange(n_frames) / 25
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream)
        for frame in container.decode(stream):
            while len(frames) < n_frames and frame.time >= targets[len(frames)] - 1e-6:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n_frames:
                break
    return np.stack(frames)


def wav_16k_bytes(path: Path, start: float, duration: float) -> bytes:
    """The clip's audio as the sample format's `wav` member: 16 kHz mono 16-bit PCM."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path)) as container:
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                  for out in resampler.resample(frame)]
    samples = np.concatenate(chunks)[round(start * SAMPLE_RATE):round((start + duration) * SAMPLE_RATE)]
    buffer = io.BytesIO()
    wavfile.write(buffer, SAMPLE_RATE, samples)
    return buffer.getvalue()
