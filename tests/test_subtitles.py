"""subtitles: changing burned-in subtitles drop a clip, static titles and watermarks do not (real OCR
on real footage from ../shared/realdata, in short windows, and on generated subtitle footage with
known answers from bench/subtitles_bench.py); a static line is read once, and reading stops once the
clip is rejected."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.subtitles_bench import subtitle_footage
from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, Item
from stages.subtitles import Subtitles, SubtitlesParams, pixels_changed, substring_edit_distance

DJ = REALDATA / "data-juicer" / "tests" / "ops" / "data"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")


def clip_item(stage, path: Path, start: float, end: float) -> Item:
    data, clip = cut_clip(path, start, end)
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0,
                end=clip["duration"], members={"mp4": data}, meta={"clips": clip},
                frames=decode_frames(data, stage.frame_specs()))


def footage_item(stage, path: Path) -> Item:
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0,
                frames=decode_frames(str(path), stage.frame_specs()))


def ready(params: SubtitlesParams) -> Subtitles:
    s = Subtitles(params)
    s.setup()
    return s


@pytest.fixture(scope="module")
def stage() -> Subtitles:
    return ready(SubtitlesParams())


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict:
    """Generated 8-s clips at 1 fps: a static title, two lines of one length swapped at 4 s in one
    place, four subtitle lines of 2 s each."""
    folder = tmp_path_factory.mktemp("subtitle-footage")
    return {clip.name: clip for clip in subtitle_footage(folder, ["static_title", "same_band", "subtitles"])}


@pytest.fixture
def recognised(stage, monkeypatch) -> list[int]:
    """Counts the crops the stage's recogniser is given, call by call."""
    calls: list[int] = []
    recognise = stage._ocr.recognise

    def counting(crops):
        calls.append(len(crops))
        return recognise(crops)

    monkeypatch.setattr(stage._ocr, "recognise", counting)
    return calls


def test_changing_subtitles_drop_the_clip(stage):
    # video3: burned-in subtitles that change (README); 4-12 s holds several subtitle lines
    item = clip_item(stage, DJ / "video3.mp4", 4.0, 12.0)
    stage.process([item])
    assert item.reject is not None and item.reject.reason == "subtitle_change"
    meta = item.meta["subtitles"]
    assert item.scores["subtitles.n_text_changes"] >= 1
    assert 0 < item.scores["subtitles.text_area_ratio"] < 1
    changing = [r for r in meta["regions"] if r["kind"] == "changing"]
    assert changing and all(len(r["texts"]) >= 2 for r in changing)
    # decided at the first change, so the samples after it were not read
    assert meta["stopped_early_at"] == meta["sample_times"][-1] < 7
    assert len(meta["texts"]) == len(meta["sample_times"]) == len(meta["boxes"]) < 8


def test_static_title_is_not_a_subtitle_change(stage):
    # video2: one person under a static overlaid title (README); 0-8 s also shows a watermark that
    # disappears after a second, which is text leaving, not text changing
    item = clip_item(stage, DJ / "video2.mp4", 0.0, 8.0)
    stage.process([item])
    assert item.reject is None, item.reject
    meta = item.meta["subtitles"]
    assert item.scores["subtitles.n_text_changes"] == 0
    n_samples = len(meta["sample_times"])
    title = [r for r in meta["regions"] if r["kind"] == "static"
             and sum(any(_inside(b, r["box"]) for b in boxes) for boxes in meta["boxes"]) == n_samples]
    assert title, "the title should be read, in one static region, in every sampled frame"
    width, height = item.meta["clips"]["width"], item.meta["clips"]["height"]
    assert all(0 <= x <= width and 0 <= y <= height for boxes in meta["boxes"] for b in boxes
               for x, y in (b[:2], b[2:])), "boxes are in clip pixels"


def test_cartoon_subtitles_change_while_watermark_stays(stage):
    # video1: cartoon with Chinese subtitles and a watermark (README)
    item = clip_item(stage, DJ / "video1.mp4", 0.0, 6.0)
    stage.process([item])
    assert item.reject is not None and item.reject.reason == "subtitle_change"
    kinds = {r["kind"] for r in item.meta["subtitles"]["regions"]}
    assert kinds == {"static", "changing"}


def test_static_title_is_read_once(stage, footage, recognised):
    # a title over a person walking: its edges stay put while the picture around it moves
    item = footage_item(stage, footage["static_title"].path)
    stage.process([item])
    meta = item.meta["subtitles"]
    assert item.reject is None and meta["stopped_early_at"] is None
    assert [r["texts"] for r in meta["regions"]] == [["morningnews"]]
    assert all(texts == ["MORNING NEWS"] for texts in meta["texts"]) and len(meta["texts"]) == 8
    assert sum(recognised) == meta["n_lines_recognised"] == 1


def test_reading_every_line_gives_the_same_answer(stage, footage):
    full = ready(SubtitlesParams(det_max_side=stage.params.max_side, recognise="all", stop_early=False))
    items = {s: footage_item(s, footage["static_title"].path) for s in (stage, full)}
    for s, item in items.items():
        s.process([item])
    changed, every = (items[s].meta["subtitles"] for s in (stage, full))
    assert every["n_lines_recognised"] == 8  # the title, in each of the 8 samples
    assert [(r["kind"], r["texts"]) for r in every["regions"]] == [(r["kind"], r["texts"]) for r in changed["regions"]]
    assert items[full].scores["subtitles.text_area_ratio"] == pytest.approx(
        items[stage].scores["subtitles.text_area_ratio"], rel=0.1)


def test_text_changing_within_one_band_is_a_change(stage, footage):
    # two lines of one length in one place: only the glyphs tell them apart
    item = footage_item(stage, footage["same_band"].path)
    stage.process([item])
    assert item.reject is not None and item.reject.reason == "subtitle_change"
    [region] = item.meta["subtitles"]["regions"]
    assert region["kind"] == "changing" and len(region["texts"]) == 2
    assert item.meta["subtitles"]["stopped_early_at"] == 4.0


def test_reading_stops_once_the_clip_is_rejected(stage, footage, recognised):
    # four lines of 2 s each: decided at 2 s, where the second line replaces the first
    item = footage_item(stage, footage["subtitles"].path)
    stage.process([item])
    meta = item.meta["subtitles"]
    assert item.reject.reason == "subtitle_change" and item.scores["subtitles.n_text_changes"] == 1
    assert meta["stopped_early_at"] == 2.0 and meta["sample_times"] == [0.0, 1.0, 2.0]
    assert sum(recognised) == 2
    whole = ready(SubtitlesParams(stop_early=False))
    item = footage_item(whole, footage["subtitles"].path)
    whole.process([item])
    assert item.scores["subtitles.n_text_changes"] == 3 and item.meta["subtitles"]["stopped_early_at"] is None
    assert item.meta["subtitles"]["n_lines_recognised"] == 4


def test_a_line_changed_when_its_glyphs_moved_not_its_background():
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)

    def line(text: str) -> np.ndarray:  # white outlined text over a fresh, smooth, random background
        texture = cv2.GaussianBlur(rng.normal(0, 1, (40, 320)), (0, 0), 3)
        image = Image.fromarray((130 + 70 * texture / np.abs(texture).max()).astype(np.uint8))
        ImageDraw.Draw(image).text((160, 20), text, font=ImageFont.load_default(size=26), anchor="mm",
                                   fill=255, stroke_width=2, stroke_fill=0)
        return np.asarray(image)

    title = line("They left the house at nine")
    assert not pixels_changed(line("They left the house at nine"), title)
    assert pixels_changed(line("Nobody saw the car go past"), title)
    assert pixels_changed(title, np.full_like(title, 128))  # no edges to compare: read it again


def test_footage_without_text_is_kept_with_empty_result(stage):
    # video4: two girls, no overlay text (README)
    item = clip_item(stage, DJ / "video4.mp4", 0.0, 3.0)
    stage.process([item])
    assert item.reject is None
    assert item.scores["subtitles.n_text_changes"] == 0
    assert item.meta["subtitles"]["regions"] == []


def test_no_frames_is_a_recorded_reject(stage):
    spec = stage.frame_specs()[0]
    empty = ClipFrames(images=np.zeros((0, 64, 64, 3), np.uint8), times=np.zeros(0), scale=1.0)
    item = Item(source_id="x", source_path="none", key="x-0000", frames={spec: empty})
    stage.process([item])
    assert item.reject.reason == "no_frames"


def test_paddleocr_without_models_names_the_parameter():
    with pytest.raises(ValueError, match="paddle"):
        Subtitles(SubtitlesParams(ocr_backend="paddleocr")).setup()


def test_substring_edit_distance_matches_partial_reads():
    assert substring_edit_distance("太狼之异国", "喜羊羊与灰太狼之异国") == 0
    assert substring_edit_distance("太狼之异间", "喜羊羊与灰太狼之异国") == 1
    assert substring_edit_distance("把他们押往大牢", "我一下就把你们逮住了") >= 4


def _inside(box, region) -> bool:
    return box[0] >= region[0] and box[1] >= region[1] and box[2] <= region[2] and box[3] <= region[3]


@pytest.mark.parametrize("lines,language", [
    (["但是 屋内外面有很多的管道怎么办呢", "嗯 如果您不介意把管道裸露在外面"], "zh"),  # video3's subtitles
    (["こんにちは、元気ですか"], "ja"),
    (["안녕하세요 반갑습니다"], "ko"),
    (["Bonjour, comment allez-vous aujourd'hui ?"], "fr"),
    (["Good morning, and welcome to the show"], "en"),
    (["OK"], None),
])
def test_language_of_on_screen_text(lines, language):
    from stages.subtitles import _Region, text_language

    region = _Region(box=np.zeros(4))
    region.readings = {k: [line] for k, line in enumerate(lines)}
    assert text_language([region], min_chars=4) == language
