"""Identity masks and references through the whole curation pipeline into shards, read back by the
trainer's dataset: the writer, the sample format and the reader agree. Tiny random Grounding-DINO
and SAM2 checkpoints (real ones are not public here), built by the same code as real-size ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from conftest import REALDATA, require_realdata
from corpus_reading import shard_paths
from curation.pipeline import load_pipeline
from curation.run import RunOptions, run_pipeline
from stages.models.checkpoint_configs import save_random_grounding_dino, save_random_sam2_video
from training.data import read_clips

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    require_realdata()
    root = tmp_path_factory.mktemp("model-stages")
    grounding = save_random_grounding_dino(root / "grounding", "test", shortest_edge=200, longest_edge=320)
    sam2 = save_random_sam2_video(root / "sam2", "test", object_score_bias=4.0)  # sees every object
    pipelines = root / "pipelines.yaml"
    pipelines.write_text(yaml.safe_dump({"masked": {"stages": [
        {"probe": {}}, {"shots": {}}, {"clips": {}},
        {"people": {"detector_path": str(REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"),
                    "pose_model_path": str(REALDATA / "MoveNet-Python-Example/tflite/"
                                           "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite")}},
        {"masks": {"grounding_model_path": str(grounding), "sam2_model_path": str(sam2), "device": "cpu",
                   "tracker_dtype": "float32", "box_threshold": 0.0, "max_objects": 3, "max_side": 320,
                   "min_match_iou": 0.0}},  # random masks rarely overlap real people: accept any overlap
        {"references": {}}, {"encode": {"preset": "ultrafast"}}, {"write": {}}]}}))
    listing = root / "inputs.txt"
    listing.write_text(str(REALDATA / "sam2/notebooks/videos/bedroom.mp4"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids spinning against the other core
    try:
        run_pipeline(load_pipeline("masked", pipelines), RunOptions(str(listing), str(root / "out"), progress=False))
    finally:
        torch.set_num_threads(threads)
    return root / "out"


def test_the_trainer_reads_masks_and_references_the_pipeline_wrote(corpus):
    (shard,) = shard_paths(corpus)
    (clip,) = list(read_clips(shard))
    n_frames = len(clip.frames)
    assert clip.num_identities == 2  # the two children, ids from the people stage
    assert clip.masks.shape[:2] == (2, n_frames) and max(clip.masks.shape[2:]) == 128
    assert clip.masks.dtype == np.uint8 and set(np.unique(clip.masks)) <= {0, 1}
    assert clip.conf.shape == (2, n_frames) and ((clip.conf >= 0) & (clip.conf <= 1)).all()
    for reference in clip.refs:
        assert reference is not None and reference.ndim == 3 and reference.shape[2] == 3
    # head crops come from pose keypoints; a child whose head is unseen at its reference frame has none
    faces = [face for face in clip.faces if face is not None]
    assert faces and all(face.ndim == 3 and face.shape[2] == 3 for face in faces)
    import pyarrow.parquet as pq

    (row,) = pq.read_table(corpus / "index" / "clips.parquet").to_pylist()
    assert row["references.n_face_references"] == len(faces) and row["masks.n_identities"] == 2
