"""python -m training.evaluate end to end: a tiny untrained model samples one video per synthetic test
clip (training.sample --testset), and the evaluator scores them with the models available here."""
from __future__ import annotations

import json

import pytest

from tests.conftest import require_realdata
from training import evaluate, sample
from training.synthetic import SyntheticSpec, write_corpus


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    require_realdata()
    folder = tmp_path_factory.mktemp("eval")
    write_corpus(folder / "test", 3, seed=5, spec=SyntheticSpec(frames=40))
    shards = str(folder / "test" / "shards" / "shard-*.tar")
    outputs = sample.main(["--config", "configs/model_tiny.yaml", "--testset", shards, "--out-dir", str(folder / "generated"),
                           "--limit", "2", "--set", "sample.steps=3", "--set", "sample.gate_start_step=1",
                           "--set", "data.ref_size=[16, 16]"])
    assert [path.name.endswith(".mp4") and path.with_suffix(".masks.npz").is_file() for path in outputs] == [True, True]
    return folder, shards


def test_evaluate_writes_every_metric_it_can_and_names_the_rest(generated, capsys):
    folder, shards = generated
    result = evaluate.main(["--generated", str(folder / "generated"), "--testset", shards, "--out", str(folder / "report")])
    assert result["videos"] == 2 and len(result["missing_generated"]) == 1 and not result["errors"]
    metrics = result["metrics"]
    for key in ("identity_sync_speaker", "identity_sync_listener", "identity_sync_margin", "mixed_audio_sync",
                "layout_iou", "sharpness", "colourfulness"):
        assert key in metrics, key
    assert 0.0 <= metrics["layout_iou"] <= 1.0
    curves = result["layout_curves"]
    assert len(curves["iou_by_step"]) == 3 and len(curves["iou_by_step_and_layer"][0]) == 4  # 3 steps, 4 layers
    for skipped, key in (("sync", "syncnet_path"), ("fvd", "i3d_path"), ("hands", "wholebody_pose_path"),
                         ("identity", "clip_path")):
        assert key in result["skipped"][skipped]
        assert not any(k in metrics for k in ("sync_c", "fvd", "hkc", "clip_i"))
    report = (folder / "report" / "report.md").read_text()
    assert "| skipped | skipped |" in report and "ID-sync margin" in report
    assert json.loads((folder / "report" / "metrics.json").read_text())["videos"] == 2
    assert (folder / "report" / "layout_iou.png").stat().st_size > 0
    assert "scored 2 videos" in capsys.readouterr().out


def test_unknown_section_is_an_error(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("fdv: {i3d_path: x}\n")
    with pytest.raises(ValueError, match="unknown sections \\['fdv'\\]"):
        evaluate.load_eval_config(config, [])
