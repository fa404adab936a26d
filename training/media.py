"""Reading and writing the media members of a sample: mp4 (PyAV), wav, png."""
from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.signal import resample_poly

AAC_FRAME = 1024


def decode_video(data: bytes, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """mp4 bytes -> (frames uint8 [T, H, W, 3] RGB, fps); stops after max_frames."""
    frames = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    return np.stack(frames), fps


def decode_audio(data: bytes, sample_rate: int) -> np.ndarray | None:
    """The first audio stream of a media file (bytes) as mono float32 in [-1, 1] at sample_rate; None
    when it has none."""
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return (np.concatenate(chunks) / 32768.0).astype(np.float32) if chunks else np.zeros(0, np.float32)


def read_wav(data: bytes, sample_rate: int) -> np.ndarray:
    """PCM wav bytes -> mono float32 in [-1, 1] at sample_rate."""
    with wave.open(io.BytesIO(data)) as reader:
        channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    if width != 2:
        raise ValueError(f"expected 16-bit PCM, got {8 * width}-bit")
    audio = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1) / 32768.0
    if rate != sample_rate:
        audio = resample_poly(audio, sample_rate, rate)
    return audio.astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encode_mp4(frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sample_rate: int = 16000) -> bytes:
    """frames uint8 [T, H, W, 3] (even H, W) -> H.264 yuv420p mp4 bytes, AAC mono audio when given."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            _encode_audio(container, sound, np.asarray(audio, dtype=np.float32), sample_rate)
    return buffer.getvalue()


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    for start in range(0, len(audio), AAC_FRAME):
        chunk = av.AudioFrame.from_ndarray(audio[None, start : start + AAC_FRAME], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, start
        container.mux(stream.encode(chunk))
    container.mux(stream.encode())


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sample_rate: int = 16000) -> None:
    Path(path).write_bytes(encode_mp4(frames, fps, audio, sample_rate))


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("png encoding failed")
    return data.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
