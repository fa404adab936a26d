"""probe: container and stream metadata; broken, empty, audio-only and too-short files are rejected."""
from __future__ import annotations


import av
from pydantic import Field

from curation.sources import file_sha256
from curation.stage import Item, Params, Resources, Stage
from curation.storage import media_url


class ProbeParams(Params):
    min_duration_s: float = Field(4.0, ge=0, description="reject sources shorter than this (no clip could come of them)")
    require_audio: bool = Field(False, description="reject sources without an audio stream")


class Probe(Stage):
    name = "probe"
    level = "source"
    Params = ProbeParams
    source_scores = True

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        document["source"]["probe"] = document["stages"].pop(cls.name, None)

    def resources(self) -> Resources:
        return Resources(cpus=0.5, memory_gb=0.5)

    def process_item(self, item: Item) -> None:
        if item.source_file.get("size_bytes") == 0:
            self.reject(item, "empty_file", "the file has zero bytes")
            return
        try:
            meta = probe_video(media_url(item.source_path))
            item.source_file["sha256"] = file_sha256(item.source_path)  # the id reads only both ends
        except (av.error.FFmpegError, OSError, ValueError, TimeoutError) as err:
            self.reject(item, "unreadable", f"{type(err).__name__}: {err}")
            return
        self.record(item, meta, **{k: meta[k] for k in ("duration", "fps", "width", "height", "has_audio")})
        item.source_duration = meta["duration"]
        if not meta["has_video"]:
            self.reject(item, "no_video_stream", "audio-only or data-only file")
        elif meta["duration"] < self.params.min_duration_s:
            self.reject(item, "too_short", f"{meta['duration']:.2f} s < {self.params.min_duration_s} s")
        elif self.params.require_audio and not meta["has_audio"]:
            self.reject(item, "no_audio", "the pipeline requires an audio stream")


def probe_video(path: str) -> dict:
    """Read stream metadata and decode the first video frame (a container that opens may still
    hold no decodable video). Sizes are as displayed, after rotation."""
    with av.open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        meta = {
            "format": container.format.name,
            "has_video": video is not None,
            "has_audio": audio is not None,
            "audio_codec": audio.codec_context.name if audio else None,
            "audio_sample_rate": audio.codec_context.sample_rate if audio else None,
        }
        if video is None:
            # a scrap of bytes can sniff as an audio format: audio-only only if audio decodes
            if audio is None or next(container.decode(audio), None) is None:
                raise ValueError("no decodable video or audio stream")
            return meta | {"duration": _container_duration(container, audio), "fps": 0.0,
                           "width": 0, "height": 0, "rotation": 0, "video_codec": None}
        first = next(container.decode(video), None)
        if first is None:
            raise ValueError("no decodable video frame")
        rotation = int(round(first.rotation)) % 360 if hasattr(first, "rotation") else 0
        width, height = video.codec_context.width, video.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        fps = float(video.average_rate or video.guessed_rate or 0)
        return meta | {
            "duration": _container_duration(container, video),
            "fps": fps,
            "width": width,
            "height": height,
            "rotation": rotation,
            "video_codec": video.codec_context.name,
            "n_frames_declared": int(video.frames),
            "pix_fmt": video.codec_context.pix_fmt,
        }


def _container_duration(container, stream) -> float:
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0
