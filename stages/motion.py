"""motion: dense optical flow on downscaled luma, to drop clips with overly intense (or no) motion.

Flow is measured between pairs of adjacent decoded frames, taken `pairs_per_second` times a second:
adjacent frames keep displacements small, where DIS and Farneback are accurate. A pair's motion is
its mean per-pixel flow magnitude divided by the frame diagonal and by the time between the two
frames, i.e. in frame diagonals per second, so it does not depend on resolution or frame rate.
The clip's `mean_flow` is the mean over pairs and `peak_flow` the largest pair.

DIS is the default: its variational refinement fills in flat regions (bare walls), where Farneback
leaves the flow near zero and so under-reads the motion of low-texture footage.

RAFT (method "raft", stages/models/raft.py) needs a weight path: set `raft_weights` to one of
torchvision's released RAFT state dicts, used as they are (Raft_Large_Weights, e.g.
raft_large_C_T_SKHT_V2-ff5fadd5.pth, with raft_variant "large"; Raft_Small_Weights, e.g.
raft_small_C_T_V2-01064c6d.pth, with raft_variant "small"); nothing is downloaded. It reads RGB
frames instead of luma, runs the pairs of a clip in batches on `device`, and pads frames to sides
divisible by 8 and at least 128 (flow is measured on the unpadded area only).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from curation.stage import Device, FrameSpec, Item, Params, Resources, Stage, WeightFile, gpu_share, gpus_param

# (first frames, second frames) [N, H, W(, 3)] uint8 -> flows [N, H, W, 2] float32 in pixels
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class MotionParams(Params):
    method: Literal["dis", "farneback", "raft"] = Field("dis", description="dense optical flow: OpenCV DIS (fast preset), OpenCV Farneback, or RAFT (needs raft_weights)")
    max_side: int = Field(256, ge=32, description="longer side of the frames flow is computed on")
    pairs_per_second: float = Field(4.0, gt=0, description="adjacent-frame pairs measured per second of clip")
    max_mean_flow: float = Field(0.5, gt=0, description="reject as motion_too_intense when the mean flow (frame diagonals per second) exceeds this")
    max_peak_flow: float = Field(2.0, gt=0, description="reject as motion_too_intense when any pair's flow (frame diagonals per second) exceeds this")
    min_mean_flow: float = Field(0.0, ge=0, description="reject as motion_static when the mean flow is below this; 0 disables")
    raft_weights: WeightFile = Field(None, description="a torchvision RAFT state dict (.pth) for method raft, e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth; must match raft_variant")
    raft_variant: Literal["small", "large"] = Field("large", description="RAFT architecture of raft_weights: torchvision's raft_large or raft_small")
    raft_iterations: int = Field(12, ge=1, description="RAFT recurrent flow updates per pair (torchvision's default 12)")
    raft_batch_pairs: int = Field(8, ge=1, description="frame pairs per RAFT forward pass (bounds memory)")
    device: Device = Field("cpu", description="torch device for RAFT (cpu, cuda, cuda:1, ...); DIS and Farneback run on the CPU")
    gpus: float = gpus_param(0.25)
    num_threads: int = Field(1, ge=1, description="torch CPU threads for RAFT, reserved as the stage's CPUs when method is raft")


class Motion(Stage):
    name = "motion"
    Params = MotionParams

    def resources(self) -> Resources:
        p = self.params
        if p.method != "raft":
            return Resources(cpus=1, memory_gb=1)
        return Resources(cpus=p.num_threads, gpus=gpu_share(p.device, p.gpus), memory_gb=2)

    def frame_specs(self) -> list[FrameSpec]:
        p = self.params
        return [FrameSpec(fps=p.pairs_per_second, max_side=p.max_side, gray=p.method != "raft", pairs=True)]

    def setup(self) -> None:
        if self.params.method == "raft":
            self._flows = _raft_flows(self.params, self.weights("raft_weights"), self.device())
        else:
            self._flows = _opencv_flows(self.params.method)

    def process_item(self, item: Item) -> None:
        frames = item.frames[self.frame_specs()[0]]
        pairs = pair_starts(frames.times, self.params.pairs_per_second)
        if not pairs:
            self.reject(item, "no_frame_pairs", f"{len(frames.times)} frame(s): motion needs two")
            return
        per_pair = self._pair_flows(frames.images, frames.times, np.asarray(pairs))
        mean_flow, peak_flow = float(np.mean(per_pair)), float(np.max(per_pair))
        meta = {"method": self.params.method, "units": "frame diagonals per second",
                "pair_times": [round(float(frames.times[i]), 3) for i in pairs],
                "pair_flow": [round(v, 5) for v in per_pair]}
        self.record(item, meta, mean_flow=mean_flow, peak_flow=peak_flow)
        self._apply_thresholds(item, mean_flow, peak_flow)

    def _pair_flows(self, images: np.ndarray, times: np.ndarray, starts: np.ndarray) -> list[float]:
        """Each pair's mean flow magnitude in frame diagonals per second."""
        flows = self._flows(images[starts], images[starts + 1])
        magnitudes = np.linalg.norm(flows, axis=3).mean(axis=(1, 2))
        diagonal = float(np.hypot(*images.shape[1:3]))
        return [float(v) for v in magnitudes / diagonal / (times[starts + 1] - times[starts])]

    def _apply_thresholds(self, item: Item, mean_flow: float, peak_flow: float) -> None:
        p = self.params
        if mean_flow > p.max_mean_flow:
            self.reject(item, "motion_too_intense", f"mean flow {mean_flow:.3f} > {p.max_mean_flow} diag/s")
        elif peak_flow > p.max_peak_flow:
            self.reject(item, "motion_too_intense", f"peak flow {peak_flow:.3f} > {p.max_peak_flow} diag/s")
        elif mean_flow < p.min_mean_flow:
            self.reject(item, "motion_static", f"mean flow {mean_flow:.4f} < {p.min_mean_flow} diag/s")


def pair_starts(times: np.ndarray, pairs_per_second: float) -> list[int]:
    """Index i of each pair (i, i+1): the first frame at or after each multiple of 1/pairs_per_second,
    keeping only pairs whose frames are distinct in time. On frames sampled as pairs (FrameSpec.pairs)
    these are the sampled pairs."""
    starts, next_time = [], 0.0
    for i in range(len(times) - 1):
        if times[i] + 1e-6 < next_time or times[i + 1] <= times[i]:
            continue
        starts.append(i)
        while next_time <= times[i] + 1e-6:
            next_time += 1.0 / pairs_per_second
    return starts


def _opencv_flows(method: str) -> FlowFn:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST) if method == "dis" else None

    def pair_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        if dis is not None:
            return dis.calc(first, second, None)
        return cv2.calcOpticalFlowFarneback(first, second, None, pyr_scale=0.5, levels=3, winsize=15,
                                            iterations=3, poly_n=5, poly_sigma=1.2, flags=0)

    return lambda firsts, seconds: np.stack([pair_flow(a, b) for a, b in zip(firsts, seconds)])


def _raft_flows(p: MotionParams, weights: str, device: str) -> FlowFn:
    import torch  # only RAFT needs torch: DIS and Farneback workers stay light

    from stages.models.raft import load_raft, raft_flows

    torch.set_num_threads(p.num_threads)
    model = load_raft(weights, p.raft_variant, device)

    def flows(firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        return np.concatenate([
            raft_flows(model, firsts[i:i + p.raft_batch_pairs], seconds[i:i + p.raft_batch_pairs],
                       p.raft_iterations, device)
            for i in range(0, len(firsts), p.raft_batch_pairs)])
    return flows
