"""human_caption_rule: keep clips whose caption mentions people (the paper's keyword rule), and
name the scene category the caption describes (for the corpus analysis).

Reads the caption a caption stage left in `item.meta["caption"]["text"]` and keeps the clip when a
keyword occurs as a whole word, case-insensitively ("Two women talk" matches "women"; "manager" does
not match "man"). Without a caption it does nothing, and says so once per worker in the log.

Words cannot tell drawn people from real ones ("a cartoon girl waves" matches "girl"): the
`photographic` stage rejects animated, CG and cartoon footage, with or without a captioner.
"""
from __future__ import annotations

import logging
import re

from pydantic import Field

from curation.stage import Item, Params, Stage

log = logging.getLogger(__name__)

PEOPLE_WORDS = ("people", "peoples", "person", "persons", "human", "humans", "man", "men",
                "woman", "women", "girl", "girls", "boy", "boys")


SCENE_WORDS = {
    "indoor": ["room", "living room", "bedroom", "kitchen", "office", "studio", "classroom", "restaurant",
               "cafe", "table", "desk", "sofa", "couch", "indoors", "hallway", "bed"],
    "outdoor": ["street", "park", "beach", "garden", "field", "road", "forest", "mountain", "city",
                "outdoors", "outside", "sky", "yard", "lake", "river"],
    "stage": ["stage", "concert", "performance", "podium", "audience", "theater", "theatre"],
    "vehicle": ["car", "bus", "train", "vehicle", "driver's seat"],
}


class HumanCaptionRuleParams(Params):
    keywords: list[str] = Field(list(PEOPLE_WORDS), min_length=1, description="words that mark a caption as mentioning people (whole words, any case)")
    scene_keywords: dict[str, list[str]] = Field(SCENE_WORDS, description="scene category -> words that suggest it; the category with most matches is recorded as `scene`")


class HumanCaptionRule(Stage):
    name = "human_caption_rule"
    analysis = {"scene": "scene"}
    Params = HumanCaptionRuleParams

    def setup(self) -> None:
        self._pattern = keyword_pattern(self.params.keywords)
        self._scene_patterns = {scene: keyword_pattern(words) for scene, words in self.params.scene_keywords.items()}
        self._warned_no_caption = False

    def process_item(self, item: Item) -> None:
        caption = (item.meta.get("caption") or {}).get("text")
        if not caption:
            self._warn_no_caption_once()
            return
        found = sorted({match.lower() for match in self._pattern.findall(caption)})
        self.record(item, meta={"matched": found}, mentions_people=bool(found), scene=self._scene(caption))
        if not found:
            self.reject(item, "no_people_in_caption", f"caption names no people: {caption[:120]!r}")

    def _scene(self, caption: str) -> str | None:
        counts = {scene: len(pattern.findall(caption)) for scene, pattern in self._scene_patterns.items()}
        best = max(counts, key=counts.get, default=None)
        return best if best and counts[best] else None

    def _warn_no_caption_once(self) -> None:
        if not self._warned_no_caption:
            log.warning("human_caption_rule: clips reach it without a caption (run a caption stage "
                        "first); they pass unchecked")
            self._warned_no_caption = True


def keyword_pattern(keywords: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(map(re.escape, keywords)) + r")\b", re.IGNORECASE)
