"""Cutting a window of a real video into clip bytes, as the clips stage would hand a clip on."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av


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
