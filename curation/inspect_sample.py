"""`curation inspect`: one sample's metadata and a contact sheet of its frames."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc

from curation.frames import decode_frames
from curation.index import read_table
from curation.pipeline import available_stages, stage_class
from curation.stage import FrameSpec
from curation.storage import Storage


def read_sample(output: str | Path, key: str) -> tuple[dict, dict[str, bytes]]:
    """The clip's index row and its members (by extension) from its shard."""
    storage = Storage(str(output))
    clips = read_table(storage, "clips")
    rows = clips.filter(pc.equal(clips.column("key"), key)).to_pylist() if clips.num_rows else []
    if not rows:
        raise KeyError(f"{key}: no such clip in {output}")
    row = rows[0]
    if not row["shard"]:
        return row, {}
    members = {}
    with storage.open_read(row["shard"]) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            name = member.name
            if name.startswith(key + "."):
                members[name[len(key) + 1:]] = tar.extractfile(member).read()
    return row, members


def contact_sheet(mp4: bytes, columns: int = 4, rows: int = 3, width: int = 320) -> np.ndarray:
    """Evenly spaced frames in a grid, each stamped with its time in the clip (BGR image)."""
    frames = decode_frames(mp4, [FrameSpec(max_side=width)])[FrameSpec(max_side=width)]
    picks = np.linspace(0, len(frames.images) - 1, min(columns * rows, len(frames.images))).round().astype(int)
    tiles = []
    for index in picks:
        tile = cv2.cvtColor(frames.images[index], cv2.COLOR_RGB2BGR)
        cv2.putText(tile, f"{frames.times[index]:.2f}s", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3)
        cv2.putText(tile, f"{frames.times[index]:.2f}s", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        tiles.append(tile)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (columns * rows - len(tiles))
    return np.vstack([np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)])


def inspect_sample(output: str | Path, key: str, png: str | Path | None = None) -> tuple[dict, Path | None]:
    row, members = read_sample(output, key)
    document = {"index_row": row, "members": {name: len(data) for name, data in members.items()}}
    if "json" in members:
        document["json"] = json.loads(members["json"])
    sheet_path = None
    video = _video_member(document.get("json", {}))
    if video in members:
        sheet_path = Path(png) if png else Path(output) / "inspect" / f"{key}.png"
        sheet_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sheet_path), contact_sheet(members[video]))
    return document, sheet_path


def _video_member(sample_json: dict) -> str | None:
    """The member the sample's clip video is in, as declared by a stage of the pipeline that wrote it."""
    names = [stage["name"] for stage in sample_json.get("lineage", {}).get("stages", [])]
    return next((stage_class(name).video_member for name in names
                 if name in available_stages() and stage_class(name).video_member), None)
