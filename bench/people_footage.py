"""Labelled test footage for the people rule and the drawn-footage filter, built from the real clips.

Two sets, each built into a folder (cached: a file already there is reused):

* `count_footage(folder)`: clips with the number of salient people in each second, labelled by
  looking at frames (see COUNT_LABELS): face close-ups and medium shots cropped from the real videos
  with ffmpeg (crop/scale), the two-person video4, bedroom's two children, a small background
  person (a real clip scaled down and padded into its large frame) and the cartoon.
  `people_count_rows()` runs the people stage on them under the old rule (body keypoints only) and
  the new one (box area with body keypoints, a visible head or a face) and reports per-second count
  accuracy.
* `photographic_footage(folder)`: real clips (the real videos, and hard cases made from them: dim,
  low contrast, letterboxed, pillarboxed, heavily compressed, upscaled from a small crop, grey) and
  drawn ones (the cartoon video1, cartoonised real clips, ffmpeg's synthetic sources, a rendered CG
  scene). `photographic_rows()` reports the photographic stage's statistics and verdict on each.

    .venv/bin/python bench/people_footage.py [--folder DIR] [--only counts|photographic]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
DATA = REALDATA / "data-juicer/tests/ops/data"
BEDROOM = REALDATA / "sam2/notebooks/videos/bedroom.mp4"
ONE_BY_ONE = REALDATA / "sample-videos/one-by-one-person-detection.mp4"
YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
MOVENET = REALDATA / "MoveNet-Python-Example/tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data/grace_hopper.jpg"
YUNET = REALDATA / "libfacedetection.train/onnx/yunet_n_dynamic.onnx"


def ffmpeg(args: list[str], out: Path) -> Path:
    """Run ffmpeg writing `out` (H.264 yuv420p, no audio) unless it is already there."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".part.mp4")
        codec = [] if "-c:v" in args else ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-an", *codec, "-pix_fmt", "yuv420p",
                        "-threads", "1", str(partial)], check=True)
        partial.rename(out)
    return out


def cut(source: Path, start: float, duration: float, out: Path, vf: str | None = None,
        crf: int = 20) -> Path:
    """A window of `source`, optionally filtered (an ffmpeg -vf chain), re-encoded at `crf`."""
    return ffmpeg(["-ss", str(start), "-t", str(duration), "-i", str(source),
                   *(["-vf", vf] if vf else []),
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf)], out)


def synthetic(source: str, duration: float, out: Path, vf: str | None = None) -> Path:
    """An ffmpeg lavfi source (testsrc2, mandelbrot, life, ...) rendered for `duration` seconds."""
    return ffmpeg(["-f", "lavfi", "-i", source, "-t", str(duration), *(["-vf", vf] if vf else [])], out)


def write_frames(frames, out: Path, fps: float = 25.0, crf: int = 20) -> Path:
    """Encode RGB uint8 frames [H, W, 3] (an iterable) into an H.264 mp4."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".part.mp4")
    with av.open(str(partial), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=round(fps))
                stream.width, stream.height = frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:stream.height, :stream.width]),
                                                 format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    partial.rename(out)
    return out


def read_frames(path: Path, start: float, duration: float):
    """RGB frames of `path` from `start` for `duration` seconds."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is None or frame.time < start:
                continue
            if frame.time >= start + duration:
                break
            yield frame.to_ndarray(format="rgb24")


def cartoonise(image: np.ndarray, levels: int = 6) -> np.ndarray:
    """A drawn look from a photograph: repeated bilateral smoothing, colours quantised to `levels` per
    channel, and dark outlines from an adaptive threshold of the median-blurred luma."""
    smooth = image
    for _ in range(4):
        smooth = cv2.bilateralFilter(smooth, 9, 40, 7)
    step = 256 // levels
    flat = (smooth // step * step + step // 2).astype(np.uint8)
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return np.where(edges[..., None] > 0, flat, 20).astype(np.uint8)


def cartoonised(source: Path, start: float, duration: float, out: Path) -> Path:
    if not out.exists():
        write_frames((cartoonise(frame) for frame in read_frames(source, start, duration)), out)
    return out


def cg_scene(out: Path, seconds: float = 4.0, size: tuple[int, int] = (640, 360), fps: float = 25.0) -> Path:
    """A rendered CG scene: three Phong-shaded spheres bouncing over a checkered floor with a sky
    gradient, soft shadows, no sensor noise (what a render engine's frames look like)."""
    if out.exists():
        return out
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * 0.45
    sky = np.stack([110 + 60 * ys / horizon, 160 + 50 * ys / horizon, 235 + 0 * ys], axis=-1)
    depth = np.maximum(ys - horizon, 1.0)
    u, v = (xs - width / 2) / depth * 40, 4000 / depth
    checker = ((np.floor(u / 20) + np.floor(v / 20)) % 2)[..., None]
    floor = np.where(checker > 0, [200, 200, 190], [90, 120, 160]) * np.clip(0.55 + depth[..., None] / height, 0, 1)
    background = np.where((ys > horizon)[..., None], floor, sky)
    light = np.array([-0.5, -0.7, 0.6]) / np.linalg.norm([-0.5, -0.7, 0.6])
    spheres = [((0.25, 0.62), 55, (220, 60, 50), 0.0), ((0.5, 0.7), 70, (60, 200, 90), 1.3),
               ((0.76, 0.6), 45, (230, 200, 60), 2.1)]

    def frame(t: float) -> np.ndarray:
        image = background.copy()
        for (cx, cy), radius, colour, phase in spheres:
            x0 = cx * width + 40 * np.sin(0.9 * t + phase)
            y0 = cy * height - 60 * abs(np.sin(2.2 * t + phase))
            shadow = ((xs - x0) / (radius * 1.2)) ** 2 + ((ys - cy * height - radius * 0.9) / (radius * 0.3)) ** 2
            image *= np.where(shadow < 1, 0.6 + 0.4 * shadow, 1.0)[..., None]
            dx, dy = (xs - x0) / radius, (ys - y0) / radius
            inside = dx ** 2 + dy ** 2 < 1
            dz = np.sqrt(np.clip(1 - dx ** 2 - dy ** 2, 0, 1))
            normal = np.stack([dx, dy, dz], axis=-1)
            lambert = np.clip(normal @ light, 0, 1)
            reflect = 2 * lambert[..., None] * normal - light
            specular = np.clip(reflect[..., 2], 0, 1) ** 30
            shaded = np.array(colour) * (0.2 + 0.8 * lambert[..., None]) + 255 * specular[..., None]
            image = np.where(inside[..., None], shaded, image)
        return np.clip(image, 0, 255).astype(np.uint8)

    return write_frames((frame(i / fps) for i in range(round(seconds * fps))), out, fps)


# ---------------------------------------------------------------- drawn versus real


@dataclass
class Footage:
    name: str
    path: Path
    drawn: bool
    hard: bool = False  # a hard case made on purpose (a degraded real clip, a disguised drawn one)
    note: str = ""


def photographic_footage(folder: Path) -> list[Footage]:
    """Real and drawn clips, 4 to 6 s each (see the module docstring)."""
    f = Path(folder) / "photographic"
    v = lambda n: DATA / f"video{n}.mp4"  # noqa: E731
    real = [
        Footage("video2 0-6s", cut(v(2), 0, 6, f / "video2_0.mp4"), False),
        Footage("video2 12-18s", cut(v(2), 12, 6, f / "video2_12.mp4"), False),
        Footage("video3 4-10s", cut(v(3), 4.3, 6, f / "video3_4.mp4"), False),
        Footage("video3 30-36s", cut(v(3), 30, 6, f / "video3_30.mp4"), False),
        Footage("video4 0-6s", cut(v(4), 0, 6, f / "video4_0.mp4"), False),
        Footage("video4 12-18s", cut(v(4), 12, 6, f / "video4_12.mp4"), False),
        Footage("video5 0-6s", cut(v(5), 0, 6, f / "video5_0.mp4"), False),
        Footage("video5 6-11s", cut(v(5), 6, 5.5, f / "video5_6.mp4"), False),
        Footage("bedroom", cut(BEDROOM, 0, 6.5, f / "bedroom.mp4"), False),
        Footage("one-by-one 0-6s (empty)", cut(ONE_BY_ONE, 0, 6, f / "one_by_one_0.mp4"), False),
        Footage("one-by-one 40-46s", cut(ONE_BY_ONE, 40, 6, f / "one_by_one_40.mp4"), False),
        Footage("one-by-one 100-106s", cut(ONE_BY_ONE, 100, 6, f / "one_by_one_100.mp4"), False),
    ]
    hard_real = [
        Footage("video4 dim (x0.3)", cut(v(4), 0, 5, f / "video4_dim.mp4", "lutrgb=r=val*0.3:g=val*0.3:b=val*0.3"),
                False, True),
        Footage("bedroom dim (x0.25)", cut(BEDROOM, 0, 5, f / "bedroom_dim.mp4",
                                          "lutrgb=r=val*0.25:g=val*0.25:b=val*0.25"), False, True),
        Footage("video5 low contrast", cut(v(5), 0, 5, f / "video5_lowcontrast.mp4", "eq=contrast=0.35"), False, True),
        Footage("bedroom low contrast", cut(BEDROOM, 0, 5, f / "bedroom_lowcontrast.mp4", "eq=contrast=0.3"),
                False, True),
        Footage("video5 pillarboxed 16:9", cut(v(5), 0, 5, f / "video5_pillarbox.mp4",
                                              "pad=1138:640:388:0:black"), False, True),
        Footage("video4 letterboxed", cut(v(4), 0, 5, f / "video4_letterbox.mp4",
                                         "scale=480:270,pad=480:360:0:45:black"), False, True),
        Footage("video4 crf 45", cut(v(4), 0, 5, f / "video4_crf45.mp4", crf=45), False, True),
        Footage("bedroom crf 45", cut(BEDROOM, 0, 5, f / "bedroom_crf45.mp4", crf=45), False, True),
        Footage("one-by-one crf 45", cut(ONE_BY_ONE, 40, 5, f / "one_by_one_crf45.mp4", crf=45), False, True),
        Footage("video2 180p crf 40", cut(v(2), 0, 5, f / "video2_small.mp4", "scale=136:180", crf=40), False, True),
        Footage("video4 face close-up x3.2", cut(v(4), 12, 5, f / "video4_closeup.mp4",
                                                "crop=150:150:95:90,scale=480:480"), False, True),
        Footage("video5 face close-up x4", cut(v(5), 4, 5, f / "video5_closeup.mp4",
                                              "crop=120:120:130:60,scale=480:480"), False, True),
        Footage("video4 grey", cut(v(4), 0, 5, f / "video4_grey.mp4", "hue=s=0"), False, True),
        Footage("bedroom blurred", cut(BEDROOM, 0, 5, f / "bedroom_blur.mp4", "gblur=sigma=3"), False, True),
        Footage("video5 saturation x1.6", cut(v(5), 0, 5, f / "video5_saturated.mp4", "eq=saturation=1.6"), False, True,
                "graded vivid on purpose"),
        Footage("video4 saturation x1.6", cut(v(4), 12, 5, f / "video4_saturated.mp4", "eq=saturation=1.6"), False, True,
                "graded vivid on purpose"),
        Footage("grace_hopper still", ffmpeg(["-loop", "1", "-t", "4", "-r", "25", "-i", str(GRACE_HOPPER),
                                              "-vf", "scale=512:600"], f / "grace_hopper.mp4"), False, True,
                "a real photograph (matplotlib's sample data), shown for 4 s"),
    ]
    drawn = [
        Footage("video1 0-4s (cartoon)", cut(v(1), 0, 4, f / "video1_0.mp4"), True),
        Footage("video1 4-8s (cartoon)", cut(v(1), 4, 4, f / "video1_4.mp4"), True),
        Footage("video1 8-11.7s (cartoon)", cut(v(1), 8, 4, f / "video1_8.mp4"), True),
        Footage("video4 cartoonised", cartoonised(v(4), 0, 4, f / "video4_cartoon.mp4"), True),
        Footage("bedroom cartoonised", cartoonised(BEDROOM, 0, 4, f / "bedroom_cartoon.mp4"), True),
        Footage("video5 cartoonised", cartoonised(v(5), 0, 4, f / "video5_cartoon.mp4"), True),
        Footage("testsrc2", synthetic("testsrc2=size=640x360:rate=25", 4, f / "testsrc2.mp4"), True),
        Footage("mandelbrot", synthetic("mandelbrot=size=640x360:rate=25", 4, f / "mandelbrot.mp4"), True),
        Footage("life", synthetic("life=size=320x180:rate=25:mold=10:ratio=0.3:life_color=#E0E040:death_color=#203060",
                                  4, f / "life.mp4", "scale=640:360:flags=neighbor"), True),
        Footage("gradients", synthetic("gradients=size=640x360:rate=25:speed=0.05:seed=1", 4, f / "gradients.mp4"), True),
        Footage("drawbox animation", synthetic(
            "color=c=0x87CEEB:size=640x360:rate=25", 4, f / "drawbox.mp4",
            "drawbox=x='100+80*sin(t)':y=120:w=140:h=100:color=0xD04040:t=fill,"
            "drawbox=x=380:y='60+50*sin(2*t)':w=90:h=160:color=0x40A040:t=fill,"
            "drawbox=x=0:y=300:w=640:h=60:color=0x806040:t=fill,"
            "drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf:text='Hello':x='200+60*t':y=40:"
            "fontsize=48:fontcolor=white:borderw=3"), True),
        Footage("rendered CG spheres", cg_scene(f / "cg_spheres.mp4"), True),
    ]
    hard_drawn = [
        Footage("video1 crf 45", cut(v(1), 0, 4, f / "video1_crf45.mp4", crf=45), True, True),
        Footage("video1 with film grain", cut(v(1), 4, 4, f / "video1_grain.mp4", "noise=alls=12:allf=t"), True, True,
                "grain added on purpose: the noise statistic reads it as a sensor"),
    ]
    return real + hard_real + drawn + hard_drawn


def photographic_rows(folder: Path, params=None) -> list[dict]:
    """The photographic stage on every clip of `photographic_footage`: its statistics (medians over
    the samples), its verdict, and whether that is right."""
    from curation.frames import decode_frames
    from curation.stage import Item
    from stages.photographic import STATISTICS, Photographic, PhotographicParams

    stage = Photographic(params or PhotographicParams())
    rows = []
    for footage in photographic_footage(folder):
        item = Item(source_id="bench", source_path=str(footage.path), key="bench-0000", clip_index=0,
                    frames=decode_frames(str(footage.path), stage.frame_specs()))
        stage.process([item])
        drawn = item.reject is not None
        rows.append({"name": footage.name, "drawn": footage.drawn, "hard": footage.hard, "verdict_drawn": drawn,
                     "correct": drawn == footage.drawn, "note": footage.note,
                     **{name: item.scores[f"photographic.{name}"] for name in STATISTICS}})
    return rows


# ---------------------------------------------------------------- per-second people counts


@dataclass
class CountFootage:
    name: str
    path: Path
    labels: list[int | None]  # salient people in each second of the clip; None: ambiguous, not scored
    drawn: bool = False
    note: str = ""


# How the labels were made: frames extracted with ffmpeg at 1 fps (2 fps for bedroom) from each
# built clip and looked at; a second's label is the number of large, clearly visible real people in
# it. Partly hidden people (bedroom's boy behind his sister in seconds 1-3) are ambiguous and not
# scored. The close-up crops show one person: other people appear at most as a strand of hair or a
# sleeve at the edge. The cartoon has no real people. The small person is one-by-one's walker
# standing at 24-30 s, the whole picture scaled to a third and padded back to its 768x432 frame: she
# is clearly visible (YOLOX finds her, MoveNet sees all her joints) but covers 2% of the frame.
COUNT_LABELS = {
    "video4 face close-up (crop x3.2)": [1] * 9,
    "video4 second girl close-up (crop x2.7)": [1] * 5,
    "video4 second girl face close-up (crop x3.7)": [1] * 5,
    "video5 face close-up (crop x3.4)": [1] * 7,
    "video5 head and shoulders (crop x2.4)": [1] * 11,
    "video2 chest close-up (top half)": [1] * 8,
    "video4 two girls (medium shot)": [2] * 10,
    "video5 full body": [1] * 11,
    "bedroom two children": [2, None, None, None, 2, 2, 2],
    "one-by-one: nobody, then a walker": [0] * 6 + [1] * 6,
    "small person (one-by-one scaled to a third in its frame, 2% of it)": [0] * 6,
    "video1 cartoon": [0] * 11,
    "video1 cartoon 3-11s": [0] * 8,
}


def small_person(out: Path, seconds: float) -> Path:
    """one-by-one from 24 s (a woman standing, 18% of the frame) scaled to a third and padded back
    into its 768x432 frame with dark grey: a small, fully visible background person, 2% of the frame."""
    return cut(ONE_BY_ONE, 24, seconds, out, "scale=iw/3:-2,pad=768:432:(ow-iw)/2:(oh-ih)/2:0x303030")


def count_footage(folder: Path) -> list[CountFootage]:
    """The labelled clips of COUNT_LABELS, cut and cropped from the real footage."""
    f = Path(folder) / "counts"
    v = lambda n: DATA / f"video{n}.mp4"  # noqa: E731
    paths = {
        "video4 face close-up (crop x3.2)": cut(v(4), 12, 9, f / "video4_closeup.mp4", "crop=150:150:95:90,scale=480:480"),
        "video4 second girl close-up (crop x2.7)": cut(v(4), 1, 5, f / "video4_second_closeup.mp4",
                                                       "crop=180:180:260:110,scale=480:480"),
        "video4 second girl face close-up (crop x3.7)": cut(v(4), 1, 5, f / "video4_second_face.mp4",
                                                            "crop=130:130:280:130,scale=480:480"),
        "video5 face close-up (crop x3.4)": cut(v(5), 3, 7, f / "video5_face.mp4", "crop=140:140:120:40,scale=480:480"),
        "video5 head and shoulders (crop x2.4)": cut(v(5), 0, 11, f / "video5_head.mp4", "crop=200:200:90:20,scale=480:480"),
        "video2 chest close-up (top half)": cut(v(2), 0, 8, f / "video2_top.mp4", "crop=480:320:0:0"),
        "video4 two girls (medium shot)": cut(v(4), 0, 10, f / "video4_two.mp4"),
        "video5 full body": cut(v(5), 0, 11, f / "video5.mp4"),
        "bedroom two children": cut(BEDROOM, 0, 7, f / "bedroom.mp4"),
        "one-by-one: nobody, then a walker": cut(ONE_BY_ONE, 0, 12, f / "one_by_one.mp4"),
        "small person (one-by-one scaled to a third in its frame, 2% of it)": small_person(f / "small_person.mp4", 6),
        "video1 cartoon": cut(v(1), 0, 11, f / "video1.mp4"),
        "video1 cartoon 3-11s": cut(v(1), 3, 8, f / "video1_3.mp4"),
    }
    return [CountFootage(name, path, COUNT_LABELS[name], drawn=name.startswith("video1")) for name, path in paths.items()]


def people_stage(face_model: bool = True):
    from stages.people import People, PeopleParams

    stage = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET),
                                face_model_path=str(YUNET) if face_model else None))
    stage.setup()
    return stage


# salience rules compared: the old one (a large box with 5 visible keypoints), the new one without a
# face detector (body or head keypoints), and the new one with YuNet's faces
RULES = {
    "old": lambda f: f.large & f.body,
    "new, keypoints only": lambda f: f.large & (f.body | f.head),
    "new": lambda f: f.large & (f.body | f.head | f.face),
}


def counts_per_second(observed, times: np.ndarray, params, rule, seconds: int) -> list[int]:
    """Salient people seen in each second under `rule`: the tracks that are salient people (salient in
    min_presence of the samples) with a detection in the second's samples, at most at once."""
    from stages.people import FramePeople, salient_tracks

    judged = [FramePeople(f.boxes, f.keypoints, rule(f), f.large, f.body, f.head, f.face) for f in observed]
    people = salient_tracks(judged, times, params)
    per_sample = np.array([sum(t in track for track in people) for t in range(len(observed))])
    second = np.floor(times + 1e-6).astype(int)
    return [int(per_sample[second == s].max(initial=0)) for s in range(seconds)]


def people_count_rows(folder: Path | None = None) -> list[dict]:
    """Per footage: the per-second count accuracy of each salience rule (RULES), over the labelled
    seconds, and of the human chain (photographic filter, then the new rule: a clip the filter rejects
    counts nobody). Each row: name, seconds (scored), labels, photographic (the filter's verdict), and
    per rule `<rule> accuracy`, `<rule> counts` and `<rule> salient samples` (the share of samples
    with a salient detection)."""
    from curation.frames import decode_frames
    from curation.stage import Item
    from stages.photographic import Photographic, PhotographicParams

    folder = Path(folder or tempfile.mkdtemp(prefix="people-footage-"))
    stage = people_stage()
    photographic = Photographic(PhotographicParams())
    spec = stage.frame_specs()[0]
    rows = []
    for footage in count_footage(folder):
        decoded = decode_frames(str(footage.path), [spec, *photographic.frame_specs()])
        frames = decoded[spec]
        item = Item(source_id="bench", source_path=str(footage.path), key="bench-0000", clip_index=0, frames=decoded)
        faces = stage.faces_on(item, frames)
        observed = [stage._people_in(image, frames.scale, boxes) for image, boxes in zip(frames.images, faces)]
        photographic.process([item])
        scored = [s for s, label in enumerate(footage.labels) if label is not None]
        row = {"name": footage.name, "seconds": len(scored), "labels": footage.labels,
               "photographic": "drawn" if item.reject else "photographic"}
        for rule_name, rule in RULES.items():
            counts = counts_per_second(observed, frames.times, stage.params, rule, len(footage.labels))
            row[f"{rule_name} counts"] = counts
            row[f"{rule_name} salient samples"] = float(np.mean([rule(f).any() for f in observed])) if observed else 0.0
            row[f"{rule_name} accuracy"] = sum(counts[s] == footage.labels[s] for s in scored) / len(scored)
        chain = [0] * len(footage.labels) if item.reject else row["new counts"]
        row["chain counts"] = chain
        row["chain accuracy"] = sum(chain[s] == footage.labels[s] for s in scored) / len(scored)
        rows.append(row)
    return rows


def print_count_rows(rows: list[dict]) -> None:
    columns = [*RULES, "chain"]
    print(f"{'footage':66s} {'s':>3s} " + " ".join(f"{c[:18]:>18s}" for c in columns))
    for row in rows:
        print(f"{row['name'][:66]:66s} {row['seconds']:3d} "
              + " ".join(f"{row[c + ' accuracy']:18.2f}" for c in columns))
    total = sum(row["seconds"] for row in rows)
    print(f"{'all (seconds weighted)':66s} {total:3d} "
          + " ".join(f"{sum(r[c + ' accuracy'] * r['seconds'] for r in rows) / total:18.2f}" for c in columns))
    print("chain: the photographic filter, then the new rule (a clip it rejects counts nobody)")
    print(f"\n{'share of samples with a salient detection':66s}     " + " ".join(f"{c[:18]:>18s}" for c in RULES))
    for row in rows:
        print(f"{row['name'][:66]:66s}     " + " ".join(f"{row[c + ' salient samples']:18.2f}" for c in RULES))
    print("(a track counts as a person when salient in min_presence = 0.3 of the samples)")


def _number(value: float | None, width: int, decimals: int) -> str:
    """A statistic, or "-" where no sample could be measured (a blank clip)."""
    return f"{value:{width}.{decimals}f}" if value is not None else f"{'-':>{width}s}"


def print_photographic_rows(rows: list[dict]) -> None:
    print(f"{'clip':34s} {'truth':>6s} {'vivid':>7s} {'hues':>5s} {'step':>7s} {'smooth':>7s} {'verdict':>8s}")
    for row in rows:
        print(f"{row['name'][:34]:34s} {'drawn' if row['drawn'] else 'real':>6s} {_number(row['vivid_fraction'], 7, 3)} "
              f"{_number(row['hue_count'], 5, 1)} {_number(row['step_edge_share'], 7, 3)} "
              f"{_number(row['smooth_fill_share'], 7, 3)} "
              f"{'drawn' if row['verdict_drawn'] else 'real':>8s}{'' if row['correct'] else '  WRONG'}")
    for subset, keep in (("real", lambda r: not r["drawn"] and not r["hard"]), ("real, hard", lambda r: not r["drawn"] and r["hard"]),
                         ("drawn", lambda r: r["drawn"] and not r["hard"]), ("drawn, hard", lambda r: r["drawn"] and r["hard"])):
        chosen = [r for r in rows if keep(r)]
        print(f"{subset}: {sum(r['correct'] for r in chosen)}/{len(chosen)} right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where the footage is built (default: a temporary folder)")
    parser.add_argument("--only", choices=("counts", "photographic"), default=None)
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage not found at {REALDATA}")
    folder = args.folder or Path(tempfile.mkdtemp(prefix="people-footage-"))
    if args.only != "counts":
        print_photographic_rows(photographic_rows(folder))
    if args.only != "photographic":
        print_count_rows(people_count_rows(folder))


if __name__ == "__main__":
    main()
