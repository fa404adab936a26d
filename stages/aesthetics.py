"""aesthetics: LAION improved aesthetic predictor (CLIP ViT-L/14 + MLP head) on sampled frames.

The clip's score is the mean over up to `max_frames` frames sampled at `sample_fps`. The CLIP
checkpoint (transformers format, with its preprocessor_config.json) and the head's .pth are read
from local paths; nothing is downloaded. Q-Align can score instead where its checkpoint is present.
Frames of every item in a batch go through the model together.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from curation.stage import Device, FrameSpec, Item, Params, Resources, Stage, WeightFile, WeightFolder, gpu_share, gpus_param
from stages.models.aesthetic_head import LaionAestheticScorer, QAlignAestheticScorer

# Defaults of min_score per backend, on each backend's own scale: LAION's predictor gives about
# 1-10 (ordinary photos 4-6), Q-Align 1-5 ("bad" to "excellent").
_DEFAULT_MIN_SCORE = {"laion": 4.0, "qalign": 2.0}


class AestheticsParams(Params):
    backend: Literal["laion", "qalign"] = Field("laion", description="laion: CLIP ViT-L/14 + LAION MLP head; qalign: Q-Align (one-align) checkpoint")
    clip_path: WeightFolder = Field(None, description="a local CLIP ViT-L/14 checkpoint folder (transformers format with preprocessor_config.json), backend laion")
    head_path: WeightFile = Field(None, description="the LAION head weights sac+logos+ava1-l14-linearMSE.pth, backend laion")
    qalign_path: WeightFolder = Field(None, description="a local Q-Align checkpoint folder, backend qalign")
    device: Device = Field("cpu", description="torch device to run on ('cpu', 'cuda', 'cuda:1')")
    gpus: float = gpus_param(1.0)
    sample_fps: float = Field(0.5, gt=0, description="frames per second sampled for scoring")
    max_frames: int = Field(8, ge=1, description="most frames scored per clip, spread evenly over the sampled ones")
    frames_per_batch: int = Field(16, ge=1, description="frames per model forward pass")
    min_score: float | None = Field(None, description="reject as low_aesthetic below this mean score; None: 4.0 for laion (1-10 scale), 2.0 for qalign (1-5 scale)")


class Aesthetics(Stage):
    name = "aesthetics"
    Params = AestheticsParams

    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=gpu_share(self.params.device, self.params.gpus), memory_gb=4)

    def frame_specs(self) -> list[FrameSpec]:
        # native size: the CLIP preprocessing resizes the frame itself, as the predictor was trained
        return [FrameSpec(fps=self.params.sample_fps)]

    def setup(self) -> None:
        p = self.params
        if p.backend == "qalign":
            self._scorer = QAlignAestheticScorer(self.weights("qalign_path"), self.device())
        else:
            self._scorer = LaionAestheticScorer(self.weights("clip_path"), self.weights("head_path"), self.device())

    def process(self, items: list[Item]) -> list[Item]:
        chosen = {id(item): self._chosen_frames(item) for item in items}
        frames = [frame for item in items for frame in chosen[id(item)]]
        scores = np.concatenate([self._scorer(frames[i:i + self.params.frames_per_batch])
                                 for i in range(0, len(frames), self.params.frames_per_batch)]) if frames else []
        offset = 0
        for item in items:
            count = len(chosen[id(item)])
            self._score_item(item, np.asarray(scores[offset:offset + count], dtype=np.float64))
            offset += count
        return items

    def _chosen_frames(self, item: Item) -> list[np.ndarray]:
        images = item.frames[self.frame_specs()[0]].images
        if len(images) <= self.params.max_frames:
            return list(images)
        return [images[i] for i in np.linspace(0, len(images) - 1, self.params.max_frames).round().astype(int)]

    def _score_item(self, item: Item, frame_scores: np.ndarray) -> None:
        if frame_scores.size == 0:
            self.reject(item, "no_frames", "no frame was decoded for aesthetic scoring")
            return
        score = float(frame_scores.mean())
        self.record(item, meta={"backend": self.params.backend,
                                "frame_scores": [round(float(s), 4) for s in frame_scores]}, score=score)
        min_score = self.params.min_score
        if min_score is None:
            min_score = _DEFAULT_MIN_SCORE[self.params.backend]
        if score < min_score:
            self.reject(item, "low_aesthetic", f"aesthetic score {score:.2f} < {min_score}")
