"""Shared test fixtures: the real data folder, generated demo inputs, and corpora built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = REPO_ROOT.parent / "shared" / "realdata"
GOLDEN = REPO_ROOT.parent / "shared" / "golden"
LIGHT_ASD_GOLDEN = GOLDEN / "light-asd"
REALDATA_VIDEOS = sorted(REALDATA.rglob("*.mp4")) if REALDATA.exists() else []
# Tests of runs, executors, storage and filters cut shots with PySceneDetect alone: TransNetV2 costs
# ~22 ms a frame on one CPU core, and shot fidelity is tests/test_shots.py's subject.
ADAPTIVE_SHOTS = "shots.detector=adaptive"


def require_realdata() -> Path:
    if not REALDATA.exists():
        pytest.skip(f"real data folder {REALDATA} is absent (CI always has it; see README)")
    return REALDATA


@pytest.fixture(scope="session")
def realdata() -> Path:
    return require_realdata()


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory) -> Path:
    from curation.demo import make_demo_inputs

    return make_demo_inputs(tmp_path_factory.mktemp("demo-input"))


from s3_server import s3_server  # noqa: E402,F401  (session fixture: a real S3 server (moto) on 127.0.0.1)
