"""audio: the clip's 16 kHz mono wav, cut from its window of the source before the clip is encoded.

Audio stages (speech, speakers, syncnet) can then decide before `encode`, so the clips they reject
are never encoded. One ffmpeg call decodes only the window's audio, which costs a small fraction of
its video; `encode` then writes the mp4 alone. A clip whose source has no audio gets no wav.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from pydantic import Field

from curation.stage import Item, Params, Resources, Stage
from curation.storage import media_url
from stages.encode import work_folder, wav_output


class AudioParams(Params):
    timeout_s: float = Field(120.0, gt=0, description="ffmpeg time limit per clip")


class Audio(Stage):
    name = "audio"
    requires = ("clips",)
    Params = AudioParams
    adds_members = ("wav",)

    def resources(self) -> Resources:
        return Resources(cpus=0.25, memory_gb=0.25)

    def process_item(self, clip: Item) -> None:
        plan = clip.meta["clips"]
        if not plan["has_audio"]:
            return
        window = clip.window
        duration = plan["n_frames"] / plan["fps"]
        seek = max(0.0, window.start - 0.25 / window.source_fps)  # where encode's cut starts: the same samples
        with tempfile.TemporaryDirectory(prefix="wav-", dir=work_folder()) as workdir:
            wav = Path(workdir) / "clip.wav"
            command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1",
                       "-ss", f"{seek:.6f}", "-t", f"{duration + 1.0:.6f}", "-i", media_url(clip.source_path),
                       *wav_output(duration, wav)]
            done = subprocess.run(command, capture_output=True, timeout=self.params.timeout_s)
            if done.returncode != 0 or not wav.exists():
                self.reject(clip, "cut_failed", done.stderr.decode(errors="replace")[-500:])
                return
            clip.members["wav"] = wav.read_bytes()
