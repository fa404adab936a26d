"""human_caption_rule: clips of ../shared/realdata captioned with their README descriptions are kept
when the caption names people and dropped when it does not; no caption is a no-op with one warning."""
from __future__ import annotations

import logging

import pytest

from conftest import REALDATA
from curation.stage import Item
from stages.human_caption_rule import PEOPLE_WORDS, HumanCaptionRule, HumanCaptionRuleParams

DJ = REALDATA / "data-juicer" / "tests" / "ops" / "data"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")

# each clip's description in ../shared/realdata/README.md, used as its caption
README_CAPTIONS = {
    "video3.mp4": "2 women at a table, talking in turn",
    "video4.mp4": "2 girls; one talks and laughs to camera while the other braids her hair",
    "video2.mp4": "1 person, overlaid static Chinese title text",
    "bedroom.mp4": "SAM2's demo clip: 2 children jumping on a bed",
}


def captioned(video: str, caption: str | None) -> Item:
    path = REALDATA / "sam2" / "notebooks" / "videos" / video if video == "bedroom.mp4" else DJ / video
    meta = {"clips": {"fps": 24.0, "n_frames": 96, "width": 480, "height": 360, "has_audio": True, "duration": 4.0}}
    if caption is not None:
        meta["caption"] = {"text": caption}
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0, end=4.0, meta=meta)


@pytest.fixture()
def stage() -> HumanCaptionRule:
    s = HumanCaptionRule(HumanCaptionRuleParams())
    s.setup()
    return s


@pytest.mark.parametrize("video,word", [("video3.mp4", "women"), ("video4.mp4", "girls"), ("video2.mp4", "person")])
def test_captions_naming_people_are_kept(stage, video, word):
    item = captioned(video, README_CAPTIONS[video])
    stage.process([item])
    assert item.reject is None
    assert item.meta["human_caption_rule"]["matched"] == [word]
    assert item.scores["human_caption_rule.mentions_people"] is True


def test_cartoon_caption_without_people_words_is_dropped(stage):
    # video1 is a cartoon with no real people (README); its README line says "no real people", which a
    # keyword rule cannot read, so a caption model's kind of description is used
    item = captioned("video1.mp4", "A cartoon sheep in armour shouts while cartoon wolves are led away; Chinese subtitles")
    stage.process([item])
    assert item.reject.reason == "no_people_in_caption"
    assert item.scores["human_caption_rule.mentions_people"] is False


def test_children_need_the_keyword_list_extended():
    # the paper's list has no "children": the bedroom clip's README caption is dropped by default
    default = HumanCaptionRule(HumanCaptionRuleParams())
    extended = HumanCaptionRule(HumanCaptionRuleParams(keywords=[*PEOPLE_WORDS, "child", "children"]))
    items = {}
    for name, stage in (("default", default), ("extended", extended)):
        stage.setup()
        items[name] = captioned("bedroom.mp4", README_CAPTIONS["bedroom.mp4"])
        stage.process([items[name]])
    assert items["default"].reject.reason == "no_people_in_caption"
    assert items["extended"].reject is None


@pytest.mark.parametrize("caption,expected", [
    ("A MAN and a Woman talk.", ["man", "woman"]),
    ("The boy's sister laughs", ["boy"]),
    ("Humans, persons, peoples", ["humans", "peoples", "persons"]),
    ("A manager walks past a humanoid robot in a girlish room", []),  # not whole words
])
def test_whole_word_case_insensitive_matching(stage, caption, expected):
    item = captioned("video4.mp4", caption)
    stage.process([item])
    assert item.meta["human_caption_rule"]["matched"] == expected
    assert (item.reject is None) == bool(expected)


def test_no_caption_is_a_no_op_with_one_warning(stage, caplog):
    items = [captioned("video4.mp4", None), captioned("video3.mp4", None), captioned("video2.mp4", "")]
    with caplog.at_level(logging.WARNING, logger="stages.human_caption_rule"):
        stage.process(items)
    assert all(item.reject is None and "human_caption_rule" not in item.meta and not item.scores for item in items)
    assert len([r for r in caplog.records if "without a caption" in r.getMessage()]) == 1


@pytest.mark.parametrize("caption,scene", [
    ("Two women sit at a table in a bright kitchen and talk.", "indoor"),
    ("SAM2's demo clip: 2 children jumping on a bed", "indoor"),
    ("A man walks along a busy city street past a park.", "outdoor"),
    ("A woman sings on stage in front of an audience.", "stage"),
    ("A boy smiles.", None),
])
def test_scene_category_from_the_caption(stage, caption, scene):
    item = captioned("video3.mp4", caption)
    stage.process([item])
    assert item.scores["human_caption_rule.scene"] == scene
