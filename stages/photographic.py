"""photographic: reject drawn, animated and rendered footage (cartoons, CG, motion graphics); keep
camera footage. Drawn characters are not people, but YOLOX, the pose model and YuNet find "people"
and "faces" in them (a cartoon's faces score like real ones), so the human rule needs this check.

No learned photo-versus-drawing model is available offline (CLIP is not here), so the stage measures
four image statistics on frames sampled at `sample_fps` (the frame's uniform borders, letterbox
and pillarbox bars, left out), takes each one's median over the samples, and rejects the clip
("drawn") when any one is beyond what camera footage shows:

* vivid_fraction: the fraction of pixels whose CIELAB chroma is at least `vivid_chroma`: the flat,
  fully saturated fills of cartoons and graphics. Camera footage rarely has more than a few percent
  of such pixels (a red dress), even graded vivid.
* hue_count: how many 30-degree CIELAB hue sectors each hold at least `hue_sector_fraction` of the
  frame in clearly coloured pixels (chroma >= `hue_chroma`): a painted palette of several distinct
  colour fields (sky, sea, sand, costumes). Camera scenes are dominated by one to three hues (skin,
  walls, a colour cast), even when graded vivid.
* step_edge_share: among textured 8x8 luma blocks (standard deviation >= 4 grey levels), the share
  that two flat tones explain (the RMS within the two halves split at the block mean is under a
  quarter of the block's standard deviation): edges between flat fills, as drawn, rendered or
  cartoonised. Camera edges carry texture and noise on both sides, and blur makes them ramps.
* smooth_fill_share: the share of 8x8 blocks that a plane fits within 1 grey level in every colour
  channel: gradient fills and blank graphics. Camera footage, even dim or heavily compressed, has
  texture in most blocks.

The defaults leave margins measured on the real footage (bench/people_footage.py: the real videos
and degraded versions of them) and the drawn footage (the cartoon video1, cartoonised real clips,
ffmpeg's synthetic sources, a rendered CG scene); docs/benchmarks.md has the table. What it cannot
see: a cartoon in muted colours with few hues and soft, compressed edges, or a drawing in one or
two colours; a real scene of many coloured fields (a playground, a flower market) may be rejected. Sensor-noise statistics were measured and left out: web
video's compression removes the noise of real footage as thoroughly as a cartoon lacks it.

Scores: vivid_fraction, hue_count, step_edge_share, smooth_fill_share (medians over the samples), drawn.
"""
from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from curation.stage import FrameSpec, Item, Params, Resources, Stage

BLOCK = 8
_Y, _X = np.mgrid[0:BLOCK, 0:BLOCK].astype(np.float32)
_PLANE = np.stack([np.ones(BLOCK * BLOCK), _X.ravel() - (BLOCK - 1) / 2, _Y.ravel() - (BLOCK - 1) / 2], axis=1)
# the plane's three centred columns are orthogonal: normalised, they are an orthonormal basis, and a
# block's residual off its best plane is its energy less the energy of its projection on them
_PLANE_BASIS = _PLANE / np.linalg.norm(_PLANE, axis=0)
STATISTICS = ("vivid_fraction", "hue_count", "step_edge_share", "smooth_fill_share")
HUE_SECTORS = 12  # 30 degrees of CIELAB hue each


class PhotographicParams(Params):
    sample_fps: float = Field(1.0, gt=0, description="frames per second analysed")
    max_side: int = Field(640, ge=64, description="longer side of the analysed frames")
    vivid_chroma: float = Field(70.0, gt=0, description="CIELAB chroma (sqrt(a*^2 + b*^2)) at which a pixel counts as vivid")
    max_vivid_fraction: float = Field(0.2, gt=0, le=1, description="reject as drawn when the median sample has at least this fraction of vivid pixels (camera footage measured at most 0.03, 0.10 when graded vivid; the cartoon 0.30 to 0.66)")
    hue_chroma: float = Field(20.0, gt=0, description="CIELAB chroma at which a pixel counts as clearly coloured for hue_count")
    hue_sector_fraction: float = Field(0.05, gt=0, le=1, description="a 30-degree hue sector counts towards hue_count when at least this fraction of the frame's pixels are clearly coloured in it")
    max_hue_count: int = Field(5, ge=1, le=HUE_SECTORS, description="reject as drawn when the median sample has at least this many hue sectors (camera footage measured at most 3, single frames 4; the cartoon's muted beach scene 5 to 6)")
    max_step_edge_share: float = Field(0.06, gt=0, le=1, description="reject as drawn when, in the median sample, at least this share of the textured 8x8 blocks are two flat tones (camera footage measured at most 0.031; cartoonised, CG and graphics 0.085 to 0.63)")
    max_smooth_fill_share: float = Field(0.85, gt=0, le=1, description="reject as drawn when, in the median sample, at least this share of the 8x8 blocks are fitted by a plane within 1 grey level (camera footage measured at most 0.64; gradient fills and plain graphics 0.9 and more)")
    border_tolerance: float = Field(4.0, ge=0, description="rows and columns at the frame's edges whose luma standard deviation is at most this are bars (letterbox, pillarbox) and are left out")


class Photographic(Stage):
    name = "photographic"
    level = "clip"
    Params = PhotographicParams

    def resources(self) -> Resources:
        return Resources(cpus=1, memory_gb=0.5)

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=self.params.max_side)]

    def process_item(self, item: Item) -> None:
        frames = item.frames[self.frame_specs()[0]]
        measured = [s for s in (frame_statistics(image, self.params) for image in frames.images) if s is not None]
        if not measured:
            self.record(item, {"samples": len(frames.images), "measured": 0}, drawn=None,
                        **dict.fromkeys(STATISTICS))
            return
        median = {name: round(float(np.median([s[name] for s in measured])), 4) for name in STATISTICS}
        limits = {"vivid_fraction": self.params.max_vivid_fraction, "hue_count": self.params.max_hue_count,
                  "step_edge_share": self.params.max_step_edge_share,
                  "smooth_fill_share": self.params.max_smooth_fill_share}
        beyond = [f"{name} {median[name]:.3f} >= {limits[name]}" for name in STATISTICS if median[name] >= limits[name]]
        self.record(item, {"samples": len(frames.images), "measured": len(measured)}, drawn=bool(beyond), **median)
        if beyond:
            self.reject(item, "drawn", "drawn, animated or rendered footage: " + ", ".join(beyond))


def frame_statistics(image: np.ndarray, params: PhotographicParams) -> dict[str, float] | None:
    """The three statistics of one RGB uint8 frame [H, W, 3] (module docstring), or None when the
    frame is uniform (a black or blank frame tells nothing)."""
    image = strip_bars(image, params.border_tolerance)
    if min(image.shape[:2]) < 2 * BLOCK:
        return None
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)  # 8-bit: a*, b* offset by 128
    a, b = lab[..., 1] - 128.0, lab[..., 2] - 128.0
    chroma = np.hypot(a, b)
    coloured = chroma >= params.hue_chroma  # hue only where there is colour: a fraction of the frame
    hue = np.degrees(np.arctan2(b[coloured], a[coloured])) % 360.0
    sectors = np.bincount((hue * HUE_SECTORS / 360.0).astype(int) % HUE_SECTORS, minlength=HUE_SECTORS) / chroma.size
    return {"vivid_fraction": float((chroma >= params.vivid_chroma).mean()),
            "hue_count": int((sectors >= params.hue_sector_fraction).sum()),
            "step_edge_share": step_edge_share(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)),
            "smooth_fill_share": smooth_fill_share(image)}


def strip_bars(image: np.ndarray, tolerance: float) -> np.ndarray:
    """The frame without its bars: runs of uniform rows at the top and bottom and columns at the sides,
    each run of one colour (a smooth gradient's rows may each be uniform, but they are not one colour)."""
    pixels = image.astype(np.float32)
    top, bottom = _inner_span(pixels, tolerance)
    left, right = _inner_span(pixels.transpose(1, 0, 2), tolerance)
    return image[top:bottom, left:right]


def step_edge_share(gray: np.ndarray, min_std: float = 4.0, max_within: float = 0.25) -> float:
    """Among the 8x8 blocks of `gray` with a standard deviation of at least `min_std`, the share that
    two flat tones explain: split at the block mean, the RMS about each half's mean is below
    `max_within` of the block's standard deviation. 0 when no block is textured."""
    blocks = _blocks(gray)
    spread = blocks.std(axis=1)
    textured = spread >= min_std
    if not textured.any():
        return 0.0
    blocks, spread = blocks[textured], spread[textured]
    upper = blocks >= blocks.mean(axis=1, keepdims=True)
    n_upper = upper.sum(axis=1)
    upper_mean = (blocks * upper).sum(axis=1) / np.maximum(n_upper, 1)
    lower_mean = (blocks * ~upper).sum(axis=1) / np.maximum(blocks.shape[1] - n_upper, 1)
    two_tones = np.where(upper, upper_mean[:, None], lower_mean[:, None])
    within = np.sqrt(((blocks - two_tones) ** 2).mean(axis=1))
    return float((within < max_within * spread).mean())


def smooth_fill_share(image: np.ndarray, max_residual: float = 1.0) -> float:
    """The share of 8x8 blocks that a plane fits within `max_residual` grey levels (RMS) in every
    colour channel."""
    residual = np.zeros(0)
    for channel in range(image.shape[2]):
        blocks = _blocks(image[..., channel]).astype(np.float64)  # float64: a small difference of large energies
        off_plane = (blocks ** 2).sum(axis=1) - ((blocks @ _PLANE_BASIS) ** 2).sum(axis=1)
        rms = np.sqrt(np.maximum(off_plane, 0.0) / blocks.shape[1])
        residual = rms if not residual.size else np.maximum(residual, rms)
    return float((residual < max_residual).mean())


def _blocks(channel: np.ndarray) -> np.ndarray:
    """The whole 8x8 blocks of a 2-D array as rows [n_blocks, 64] float32."""
    height, width = channel.shape[0] // BLOCK * BLOCK, channel.shape[1] // BLOCK * BLOCK
    return (channel[:height, :width].reshape(height // BLOCK, BLOCK, width // BLOCK, BLOCK)
            .transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK).astype(np.float32))


def _inner_span(pixels: np.ndarray, tolerance: float) -> tuple[int, int]:
    """[start, end) of the rows between the bars at both ends of `pixels` [rows, columns, channels].
    Rows are measured one by one from each end inward: bars are a few rows, so most of the frame is
    never measured."""
    def uniform(row: int) -> bool:
        return float(pixels[row].std(axis=0).max()) <= tolerance

    def bar(row: int, edge: int) -> bool:
        return uniform(row) and float(np.abs(pixels[row].mean(axis=0) - pixels[edge].mean(axis=0)).max()) <= tolerance

    start, end = 0, len(pixels)
    while start < end and bar(start, 0):
        start += 1
    while end > start and bar(end - 1, -1):
        end -= 1
    return start, end
