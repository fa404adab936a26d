"""Labelled shot-boundary footage: sequences cut from the real clips in ../shared/realdata and joined
by transitions of known kind and known frames, and the score of a shot list against them.

Frames are composed in numpy (so every transition frame is known exactly) and encoded with x264, so
detectors see real compression. Each sequence stresses one kind of transition:

  cuts          hard cuts between sources, and between two framings of one source (an angle change)
  fade_black    fade out to black, black hold, fade in
  fade_white    the same through white
  dissolve      cross-dissolves of 12-20 frames
  short_shots   8-frame shots between longer ones
  letterbox_dim dim scenes inside 2.39:1 black bars, joined by cuts (they must be kept, not dropped)
  title_cards   title cards (text on a flat ground) entered and left by cuts or fades

A transition is the frame span [first, end) that belongs to no shot; a hard cut is the empty span at
the first frame of the new shot. A predicted transition matches a true one when their spans, widened
by the tolerance, overlap (one to one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
FPS = 25
SIZE = (640, 360)
TOLERANCE_FRAMES = 3
KINDS = ("cuts", "fade_black", "fade_white", "dissolve", "short_shots", "letterbox_dim", "title_cards")

# (file, first second, last second) of runs that hold no cut of their own (checked frame by frame)
_SOURCES = {
    "talk": ("data-juicer/tests/ops/data/video4.mp4", 0.0, 22.0),
    "girl": ("data-juicer/tests/ops/data/video5.mp4", 0.0, 11.5),
    "title": ("data-juicer/tests/ops/data/video2.mp4", 0.0, 23.0),
    "bed": ("sam2/notebooks/videos/bedroom.mp4", 0.0, 6.6),
    "walk": ("sample-videos/one-by-one-person-detection.mp4", 0.0, 130.0),
    "table": ("data-juicer/tests/ops/data/video3.mp4", 11.2, 28.0),
}


# The real clips' shot boundaries, as decoded-frame indices of each new shot's first frame. Made by
# listing every frame whose HSV difference from the previous one stood far above the clip's median
# and looking at the frames around each: jump cuts and picture-in-picture inserts appearing,
# changing or leaving count as cuts; subtitles changing, animation and camera shake do not.
REAL_CUTS = {
    "data-juicer/tests/ops/data/video1.mp4": [144, 237],
    "data-juicer/tests/ops/data/video2.mp4": [],
    "data-juicer/tests/ops/data/video3.mp4": [103, 264, 528, 675, 698, 960, 1060, 1091, 1123],
    "data-juicer/tests/ops/data/video4.mp4": [],
    "data-juicer/tests/ops/data/video5.mp4": [],
    "sam2/notebooks/videos/bedroom.mp4": [],
    "sample-videos/one-by-one-person-detection.mp4": [],
}


@dataclass
class Transition:
    kind: str
    first: int
    end: int


@dataclass
class LabelledVideo:
    name: str
    path: Path
    n_frames: int
    shots: list[tuple[int, int]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass
class Shot:
    source: str
    start_s: float  # seconds into the source file
    n_frames: int
    zoom: float = 1.0
    gain: float = 1.0
    letterbox: bool = False


def real_video(relative: str) -> LabelledVideo:
    """A real clip with its labelled cuts (REAL_CUTS)."""
    path = REALDATA / relative
    with av.open(str(path)) as container:
        n_frames = sum(1 for _ in container.decode(video=0))
    cuts = REAL_CUTS[relative]
    bounds = [0, *cuts, n_frames]
    return LabelledVideo(path.name, path, n_frames, list(zip(bounds, bounds[1:])),
                         [Transition("cut", frame, frame) for frame in cuts])


def build(kind: str, folder: Path) -> LabelledVideo:
    """Write the `kind` sequence as folder/<kind>.mp4 with its labels."""
    if kind not in KINDS:
        raise ValueError(f"unknown footage kind {kind!r}; one of {KINDS}")
    if not REALDATA.exists():
        raise FileNotFoundError(f"real data folder {REALDATA} is absent")
    composer = _Composer(kind)
    _SEQUENCES[kind](composer)
    path = folder / f"{kind}.mp4"
    _encode(composer.frames, path)
    return LabelledVideo(kind, path, len(composer.frames), composer.shots, composer.transitions)


class _Composer:
    def __init__(self, kind: str):
        self.kind = kind
        self.frames: list[np.ndarray] = []
        self.shots: list[tuple[int, int]] = []
        self.transitions: list[Transition] = []
        self._pending: list[np.ndarray] | None = None  # the last shot's frames, for a dissolve into the next

    def shot(self, shot: Shot) -> None:
        start = len(self.frames)
        self.frames += _shot_frames(shot)
        self.shots.append((start, len(self.frames)))

    def cut(self) -> None:
        self.transitions.append(Transition("cut", len(self.frames), len(self.frames)))

    def fade(self, colour: int, out_frames: int, hold_frames: int, in_frames: int, next_shot: Shot) -> None:
        """Fade the last shot's tail to `colour`, hold it, fade into `next_shot`'s head. The faded frames
        are taken from the shots' own ends, so the shots lose them."""
        flat = np.full_like(self.frames[-1], colour)
        first = len(self.frames) - out_frames
        for i in range(out_frames):
            weight = (i + 1) / (out_frames + 1)
            self.frames[first + i] = _blend(self.frames[first + i], flat, weight)
        self.shots[-1] = (self.shots[-1][0], first)
        self.frames += [flat] * hold_frames
        head = _shot_frames(next_shot)
        for i in range(in_frames):
            head[i] = _blend(flat, head[i], (i + 1) / (in_frames + 1))
        start = len(self.frames)
        self.frames += head
        self.transitions.append(Transition(f"fade_{'black' if colour < 128 else 'white'}", first, start + in_frames))
        self.shots.append((start + in_frames, len(self.frames)))

    def dissolve(self, n: int, next_shot: Shot) -> None:
        head = _shot_frames(next_shot)
        first = len(self.frames) - n
        for i in range(n):
            self.frames[first + i] = _blend(self.frames[first + i], head[i], (i + 1) / (n + 1))
        self.shots[-1] = (self.shots[-1][0], first)
        self.frames += head[n:]
        self.transitions.append(Transition("dissolve", first, len(self.frames) - len(head) + n))
        self.shots.append((len(self.frames) - len(head) + n, len(self.frames)))

    def title_card(self, text: str, n: int, ground: tuple[int, int, int]) -> None:
        """A card entered by a cut and left by a cut: the whole card is one transition span."""
        card = np.full((SIZE[1], SIZE[0], 3), ground, np.uint8)
        ink = (255, 255, 255) if sum(ground) < 384 else (20, 20, 20)
        for line, words in enumerate(text.split("|")):
            cv2.putText(card, words, (60, 150 + 50 * line), cv2.FONT_HERSHEY_DUPLEX, 1.2, ink, 2, cv2.LINE_AA)
        first = len(self.frames)
        self.frames += [card] * n
        self.transitions.append(Transition("title_card", first, len(self.frames)))


def _blend(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    return cv2.addWeighted(a, 1.0 - weight_b, b, weight_b, 0.0)


def _cuts(c: _Composer) -> None:
    plan = [Shot("talk", 1.0, 60), Shot("bed", 0.5, 55), Shot("girl", 2.0, 50), Shot("walk", 30.0, 45),
            Shot("table", 12.0, 60), Shot("table", 12.0, 40, zoom=1.8), Shot("title", 3.0, 50),
            Shot("talk", 10.0, 45, zoom=1.6), Shot("talk", 12.0, 45)]
    _join_by_cuts(c, plan)


def _short_shots(c: _Composer) -> None:
    plan = [Shot("girl", 1.0, 50), Shot("bed", 1.0, 8), Shot("talk", 3.0, 50), Shot("walk", 60.0, 8),
            Shot("table", 14.0, 8), Shot("title", 8.0, 50), Shot("girl", 6.0, 8, zoom=1.7), Shot("bed", 3.0, 50)]
    _join_by_cuts(c, plan)


def _letterbox_dim(c: _Composer) -> None:
    plan = [Shot("talk", 2.0, 70, gain=0.22, letterbox=True), Shot("table", 15.0, 60, gain=0.18, letterbox=True),
            Shot("bed", 1.0, 60, gain=0.25, letterbox=True), Shot("girl", 4.0, 70, gain=0.2, letterbox=True),
            Shot("walk", 40.0, 60, gain=0.3, letterbox=True)]
    _join_by_cuts(c, plan)


def _join_by_cuts(c: _Composer, plan: list[Shot]) -> None:
    for i, shot in enumerate(plan):
        if i:
            c.cut()
        c.shot(shot)


def _fade(colour: int):
    def sequence(c: _Composer) -> None:
        c.shot(Shot("talk", 1.0, 60))
        c.fade(colour, 12, 6, 12, Shot("bed", 0.3, 60))
        c.fade(colour, 20, 0, 20, Shot("girl", 2.0, 70))  # through the colour without a hold
        c.fade(colour, 8, 25, 8, Shot("table", 13.0, 60))
        c.fade(colour, 15, 3, 15, Shot("walk", 50.0, 60))
    return sequence


def _dissolve(c: _Composer) -> None:
    c.shot(Shot("girl", 1.0, 60))
    c.dissolve(15, Shot("talk", 4.0, 65))
    c.dissolve(20, Shot("bed", 1.0, 65))
    c.dissolve(12, Shot("title", 5.0, 65))
    c.dissolve(16, Shot("table", 16.0, 65))
    c.dissolve(18, Shot("table", 20.0, 65, zoom=1.7))


def _title_cards(c: _Composer) -> None:
    c.shot(Shot("talk", 1.0, 60))
    c.title_card("CHAPTER ONE", 40, (0, 0, 0))
    c.shot(Shot("bed", 0.5, 60))
    c.title_card("Three years later|the city", 30, (30, 60, 120))
    c.shot(Shot("girl", 2.0, 60))
    c.title_card("THE END", 25, (235, 235, 235))
    c.shot(Shot("table", 14.0, 60))


_SEQUENCES = {"cuts": _cuts, "fade_black": _fade(0), "fade_white": _fade(255), "dissolve": _dissolve,
              "short_shots": _short_shots, "letterbox_dim": _letterbox_dim, "title_cards": _title_cards}


def _shot_frames(shot: Shot) -> list[np.ndarray]:
    """`shot.n_frames` consecutive source frames from `shot.start_s`, framed to SIZE (fill, or 2.39:1
    bars). Frames are taken as they are, not resampled to FPS: a resampled frame rate repeats frames,
    which would be an artefact of this footage, not of footage users have."""
    relative, run_start, run_end = _SOURCES[shot.source]
    images = _consecutive_frames(REALDATA / relative, shot.start_s, shot.n_frames)
    if shot.start_s < run_start or len(images) < shot.n_frames or shot.start_s + shot.n_frames / FPS > run_end:
        raise ValueError(f"shot {shot} leaves its source's cut-free run {run_start}-{run_end} s")
    return [_frame_to_size(image, shot) for image in images]


def _consecutive_frames(path: Path, start_s: float, n_frames: int) -> list[np.ndarray]:
    """RGB frames: the first one starting at or after start_s, and the n_frames - 1 after it."""
    frames = []
    with av.open(str(path)) as container:
        container.seek(int(max(0.0, start_s - 1.0) * av.time_base))  # to the keyframe before
        for frame in container.decode(video=0):
            if frame.time >= start_s - 1e-6:
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == n_frames:
                    break
    return frames


def _frame_to_size(image: np.ndarray, shot: Shot) -> np.ndarray:
    width, height = SIZE
    picture_h = int(round(width / 2.39 / 2)) * 2 if shot.letterbox else height
    image = _crop_to_aspect(image, width / picture_h, shot.zoom)
    picture = cv2.resize(image, (width, picture_h), interpolation=cv2.INTER_AREA)
    if shot.gain != 1.0:
        picture = np.clip(picture.astype(np.float32) * shot.gain, 0, 255).astype(np.uint8)
    if not shot.letterbox:
        return picture
    framed = np.zeros((height, width, 3), np.uint8)
    top = (height - picture_h) // 2
    framed[top:top + picture_h] = picture
    return framed


def _crop_to_aspect(image: np.ndarray, aspect: float, zoom: float) -> np.ndarray:
    height, width = image.shape[:2]
    crop_w, crop_h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    crop_w, crop_h = int(crop_w / zoom), int(crop_h / zoom)
    left, top = (width - crop_w) // 2, (height - crop_h) // 3  # a zoom keeps faces, which sit high
    return image[top:top + crop_h, left:left + crop_w]


def _encode(frames: list[np.ndarray], path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@dataclass
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def f1(self) -> float:
        found = 2 * self.true_positives
        return found / (found + self.false_positives + self.false_negatives) if found else 0.0


def score_transitions(truth: list[Transition], predicted: list[tuple[int, int]],
                      tolerance: int = TOLERANCE_FRAMES) -> Score:
    """Match predicted transition spans [first, end) to true ones, one to one, nearest first."""
    pairs = sorted((_gap(t.first, t.end, p[0], p[1]), i, j) for i, t in enumerate(truth)
                   for j, p in enumerate(predicted) if _gap(t.first, t.end, p[0], p[1]) <= tolerance)
    used_truth, used_predicted = set(), set()
    for _, i, j in pairs:
        if i not in used_truth and j not in used_predicted:
            used_truth.add(i)
            used_predicted.add(j)
    matched = len(used_truth)
    return Score(matched, len(predicted) - matched, len(truth) - matched)


def _gap(first_a: int, end_a: int, first_b: int, end_b: int) -> int:
    """Frames between two spans [first, end) (0 when they touch or overlap; a cut is an empty span)."""
    return max(0, first_b - end_a, first_a - end_b)


def transitions_between(shots: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The transition spans a shot list implies: the frames between consecutive shots."""
    return [(end, start) for (_, end), (start, _) in zip(shots, shots[1:])]


def shot_frames_kept(video: LabelledVideo, shots: list[tuple[int, int]]) -> float:
    """Fraction of the true shots' frames that lie inside a predicted shot (a dim scene dropped as
    dark, or a short shot merged away as a transition, lowers it)."""
    inside = np.zeros(video.n_frames, bool)
    for start, end in shots:
        inside[start:end] = True
    total = sum(end - start for start, end in video.shots)
    return float(sum(inside[start:end].sum() for start, end in video.shots) / total)


def transition_frames_in_shots(video: LabelledVideo, shots: list[tuple[int, int]]) -> int:
    """Frames of fades, dissolves and title cards that a predicted shot contains (they must be cut out)."""
    inside = np.zeros(video.n_frames, bool)
    for start, end in shots:
        inside[start:end] = True
    return int(sum(inside[t.first:t.end].sum() for t in video.transitions))
