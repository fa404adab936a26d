"""encode: cut each kept clip from its source and encode it (H.264 mp4 with AAC, and a 16 kHz mono wav).

It comes after the filters, so a rejected clip is never encoded: the analysis stages before it read
frames decoded from the clip's window of the source (`Item.window`, set by `clips`). One ffmpeg call
decodes the window once and writes both members. Clips are cut by frame index: the seek lands a
quarter frame before the first frame (ffmpeg drops what it decodes before that time), `trim` passes
exactly the window's frames, and the output stops at the frame count `clips` planned, so a clip
never holds a frame of the next shot and always has the frames later stages sized their arrays by.

Same input, same bytes: single-threaded x264, no metadata, bit-exact muxing. What each preset and
crf cost is measured in docs/benchmarks.md ("Clip encoding").
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import av
from pydantic import Field

from curation.stage import Item, Params, Resources, SourceWindow, Stage
from curation.storage import media_url

AUDIO_RATE = 16000


class EncodeParams(Params):
    crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor")
    preset: str = Field("veryfast", description="x264 preset (docs/benchmarks.md: cost and size of each)")
    encoder_threads: int = Field(1, ge=1, description="x264 threads; 1 keeps clip bytes reproducible (frame-threaded x264 was seen to give different bytes between runs under load); parallelism comes from running clips side by side")
    timeout_s: float = Field(600.0, gt=0, description="ffmpeg time limit per clip")


class Encode(Stage):
    name = "encode"
    requires = ("clips",)
    Params = EncodeParams
    adds_members = ("mp4", "wav")
    video_member = "mp4"

    def __init__(self, params: EncodeParams):
        super().__init__(params)
        self.clips_encoded = 0  # ffmpeg encodes started by this instance (a test counts them)

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        encoded = document["stages"].pop(cls.name, None) or {}
        document["clip"] = {**(document.get("clip") or {}), **encoded}

    def resources(self) -> Resources:
        return Resources(cpus=self.params.encoder_threads, memory_gb=1)

    def process_item(self, clip: Item) -> None:
        plan = clip.meta["clips"]
        with tempfile.TemporaryDirectory(prefix="clip-", dir=work_folder()) as workdir:
            mp4, wav = Path(workdir) / "clip.mp4", Path(workdir) / "clip.wav"
            wants_wav = plan["has_audio"] and "wav" not in clip.members  # `audio` may have cut it already
            command = ffmpeg_cut_command(media_url(clip.source_path), clip.window, self.params,
                                         mp4, wav if wants_wav else None)
            self.clips_encoded += 1
            done = subprocess.run(command, capture_output=True, timeout=self.params.timeout_s)
            if done.returncode != 0 or not mp4.exists():
                self.reject(clip, "cut_failed", done.stderr.decode(errors="replace")[-500:])
                return
            encoded = _clip_info(mp4)
            clip.members["mp4"] = mp4.read_bytes()
            if wants_wav and wav.exists():
                clip.members["wav"] = wav.read_bytes()
        clip.window = None
        if (encoded["n_frames"], encoded["width"], encoded["height"]) != (plan["n_frames"], plan["width"], plan["height"]):
            self.reject(clip, "cut_mismatch", f"encoded {encoded['n_frames']} frames {encoded['width']}x{encoded['height']}, "
                                              f"planned {plan['n_frames']} frames {plan['width']}x{plan['height']}")
            return
        self.record(clip, {"has_audio": "wav" in clip.members, "mp4_bytes": len(clip.members["mp4"])},
                    mp4_bytes=len(clip.members["mp4"]))


def ffmpeg_cut_command(source: str, window: SourceWindow, params: EncodeParams, mp4: Path, wav: Path | None) -> list[str]:
    """One ffmpeg call, one decode of the window: the standardised H.264 clip and, if there is audio,
    the wav."""
    seek = max(0.0, window.start - 0.25 / window.source_fps)
    n_frames = window.n_frames
    duration = n_frames / (window.fps or window.source_fps)
    filters = [f"trim=end_frame={window.end_frame - window.first_frame}", "setpts=PTS-STARTPTS",
               f"scale={window.width}:{window.height}:flags=area"] + ([f"fps={window.fps}"] if window.fps else [])
    bitexact = ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact"]
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-threads", str(params.encoder_threads),  # the decoder's threads: what the stage reserves, no more
               "-ss", f"{seek:.6f}", "-t", f"{duration + 1.0:.6f}", "-i", source,
               "-map", "0:v:0", "-map", "0:a:0?", "-vf", ",".join(filters), "-frames:v", str(n_frames),
               "-t", f"{duration:.6f}",
               "-c:v", "libx264", "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
               "-threads", str(params.encoder_threads), "-c:a", "aac", "-b:a", "128k",
               "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart",
               *bitexact, str(mp4)]
    return command + (wav_output(duration, wav) if wav is not None else [])


def wav_output(duration: float, wav: Path) -> list[str]:
    """ffmpeg output options for the clip's 16 kHz mono 16-bit wav."""
    return ["-map", "0:a:0", "-vn", "-t", f"{duration:.6f}", "-ac", "1", "-ar", str(AUDIO_RATE),
            "-c:a", "pcm_s16le", "-flags:a", "+bitexact", "-map_metadata", "-1", "-fflags", "+bitexact", str(wav)]


def _clip_info(mp4: Path) -> dict:
    with av.open(str(mp4)) as container:
        video = container.streams.video[0]
        n_frames = video.frames or sum(1 for _ in container.demux(video) if _.size)
        return {"n_frames": int(n_frames), "width": video.codec_context.width, "height": video.codec_context.height}


def work_folder() -> Path:
    """This process's folder for clips being cut. A worker killed mid-cut (kill -9, a lost node)
    leaves its folder behind: the first cut of any later process removes those of dead processes."""
    folder = Path(tempfile.gettempdir()) / f"curation-clips-{os.getpid()}"
    if not folder.exists():
        for stale in folder.parent.glob("curation-clips-*"):
            if not _alive(int(stale.name.rsplit("-", 1)[1])):
                shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
