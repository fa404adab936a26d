"""Reading a finished corpus back the way a user would: plain webdataset over the committed shards
(index/shards.txt lists them)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import webdataset as wds


def shard_paths(output: Path) -> list[str]:
    return [str(output / name) for name in (output / "index" / "shards.txt").read_text().split()]


def member_hashes(output: Path) -> dict[str, dict[str, str]]:
    """key -> {member extension: sha256}, read with plain webdataset; fails on a duplicated key."""
    found: dict[str, dict[str, str]] = {}
    for sample in wds.WebDataset(shard_paths(output), shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        assert key not in found, f"duplicate sample {key}"
        found[key] = {ext: hashlib.sha256(data).hexdigest() for ext, data in sample.items()
                      if not ext.startswith("__")}
    return found


def sample_jsons(output: Path) -> dict[str, dict]:
    return {s["__key__"]: json.loads(s["json"])
            for s in wds.WebDataset(shard_paths(output), shardshuffle=False, empty_check=False)}
