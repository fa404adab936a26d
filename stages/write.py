"""write: the sink. WebDataset shards plus the Parquet index (curation/writer.py does the work)."""
from __future__ import annotations

from pydantic import Field

from curation.stage import Params, Stage


class WriteParams(Params):
    max_samples_per_shard: int = Field(1000, ge=1, description="close a shard after this many samples")
    max_bytes_per_shard: int = Field(1_000_000_000, ge=1_000, description="close a shard once it holds this many bytes")
    commit_interval_s: float = Field(60.0, gt=0, description="commit index rows of rejected clips at least this often, so a crash loses little")


class Write(Stage):
    name = "write"
    level = "sink"
    Params = WriteParams
    reads_members = ("mp4",)  # a corpus sample is its encoded clip
