"""pipelines.yaml errors name the file and line, before any work starts; --set overrides apply."""
from __future__ import annotations

import sys
import textwrap
import types

import pytest
from pydantic import Field

import stages
from curation.pipeline import PipelineError, load_pipeline
from curation.stage import Params, Stage


def _write(tmp_path, text):
    path = tmp_path / "pipes.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _error(path, name="p", overrides=None) -> str:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(name, path, overrides)
    return str(caught.value)


def test_the_shipped_ingest_pipeline_loads():
    pipeline = load_pipeline("ingest")
    assert [s.name for s in pipeline.stages] == ["probe", "shots", "clips", "encode", "write"]


def test_unknown_stage_names_its_line_and_suggests(tmp_path):
    path = _write(tmp_path, """\
        p:
          stages:
            - probe
            - shot:
                detector: content
            - clips
            - write
        """)
    message = _error(path)
    assert f"{path}:4:" in message and "unknown stage 'shot'" in message and "did you mean 'shots'" in message


def test_unknown_and_mistyped_parameters_name_their_lines(tmp_path):
    path = _write(tmp_path, """\
        p:
          stages:
            - probe
            - shots:
                detector: content
                treshold: 30
            - clips:
                max_clip_s: thirty
            - write
        """)
    message = _error(path)
    assert f"{path}:6: shots: unknown parameter 'treshold'" in message
    path.write_text(path.read_text().replace("        treshold: 30\n", ""))
    assert f"{path}:7: clips.max_clip_s: Input should be a valid number" in _error(path)


def test_missing_required_parameter_names_the_stage_line(tmp_path, monkeypatch):
    class NeedsWeightsParams(Params):
        weights: str = Field(description="path to the weights")

    class NeedsWeights(Stage):
        name = "needs_weights"
        Params = NeedsWeightsParams

        def process_item(self, item):
            return None

    module = types.ModuleType("stages.needs_weights")
    module.NeedsWeights = NeedsWeights
    monkeypatch.setitem(sys.modules, "stages.needs_weights", module)
    monkeypatch.setattr("curation.pipeline.available_stages", lambda: ["probe", "shots", "clips", "needs_weights", "encode", "write"])
    path = _write(tmp_path, """\
        p:
          stages:
            - probe
            - shots
            - clips
            - needs_weights: {}
            - encode
            - write
        """)
    assert f"{path}:6: needs_weights: missing required parameter 'weights'" in _error(path)
    pipeline = load_pipeline("p", path, ["needs_weights.weights=/models/w.pt"])
    assert pipeline.stages[3].params.weights == "/models/w.pt"


def test_order_and_sink_rules(tmp_path):
    path = _write(tmp_path, "p:\n  stages:\n    - probe\n    - clips\n    - write\n")
    assert "needs 'shots' before it" in _error(path)
    path = _write(tmp_path, "p:\n  stages:\n    - probe\n    - shots\n    - clips\n")
    assert "ends with exactly one sink stage" in _error(path)
    path = _write(tmp_path, "p:\n  stages:\n    - probe\n    - shots\n    - clips\n    - write\n")
    assert "stage 'write' reads the clip's 'mp4', which encode adds" in _error(path)
    path = _write(tmp_path, "p:\n  stages:\n    - probe\n    - shots\n    - clips\n    - speech\n    - encode\n    - write\n")
    assert "stage 'speech' reads the clip's 'wav', which audio or encode adds: put that before it" in _error(path)


def test_overrides_apply_and_are_validated():
    pipeline = load_pipeline("ingest", overrides=["clips.max_clip_s=12", "shots.detector=content"])
    assert pipeline.stages[2].params.max_clip_s == 12.0 and pipeline.stages[1].params.detector == "content"
    with pytest.raises(PipelineError, match=r"--set clips.max_clip_s=x: clips.max_clip_s"):
        load_pipeline("ingest", overrides=["clips.max_clip_s=x"])
    with pytest.raises(PipelineError, match="did you mean 'clips'"):
        load_pipeline("ingest", overrides=["clip.max_clip_s=12"])
    assert load_pipeline("ingest").config_hash() != pipeline.config_hash()


def test_unknown_pipeline_lists_the_defined_ones():
    with pytest.raises(PipelineError, match="no pipeline named 'ingets'.*did you mean 'ingest'"):
        load_pipeline("ingets")


def test_every_stage_module_defines_its_stage():
    from curation.pipeline import available_stages, stage_class

    for name in available_stages():
        assert stage_class(name).name == name
    assert "models" not in available_stages() and stages.__name__ == "stages"


def test_weight_paths_resolve_against_the_pipelines_file_and_must_exist(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "asd.model").write_bytes(b"weights")
    path = _write(tmp_path, """\
        p:
          stages:
            - probe
            - shots
            - clips
            - faces:
                model_path: models/yunet.onnx
            - audio
            - speakers:
                model_path: models/asd.model
            - encode
            - write
        """)
    message = _error(path)
    assert f"{path}:7: faces.model_path: no such file 'models/yunet.onnx'" in message
    assert f"read from its folder, {tmp_path}" in message
    (tmp_path / "models" / "yunet.onnx").write_bytes(b"weights")
    stages_by_name = {s.name: s for s in load_pipeline("p", path).stages}
    assert stages_by_name["speakers"].params.model_path == str(tmp_path / "models" / "asd.model")
    with pytest.raises(PipelineError, match=r"--set speakers.model_path=gone.model: speakers.model_path: no such file"):
        load_pipeline("p", path, ["speakers.model_path=gone.model"])


def test_a_weight_path_left_unset_stops_setup_naming_the_parameter():
    pipeline = load_pipeline("talking")  # syncnet.model_path is null in pipelines.yaml
    syncnet = next(s for s in pipeline.stages if s.name == "syncnet").build()
    with pytest.raises(ValueError, match=r"^syncnet.model_path: not set; set it to SyncNet weights"):
        syncnet.setup()


def test_devices_and_gpu_shares_are_checked_and_declared():
    with pytest.raises(PipelineError, match=r"speakers.device: .*device must be 'cpu', 'cuda' or 'cuda:N'"):
        load_pipeline("talking", overrides=["speakers.device=gpu0"])
    pipeline = load_pipeline("talking", overrides=["syncnet.device=cuda:1", "syncnet.gpus=0.25"])
    by_name = {s.name: s.build() for s in pipeline.stages}
    assert by_name["syncnet"].resources().gpus == 0.25 and by_name["speakers"].resources().gpus == 0.0


def test_every_array_a_stage_reads_is_one_a_stage_adds():
    from curation.pipeline import available_stages, stage_class
    from curation.stage import matches_any

    classes = [stage_class(name) for name in available_stages()]
    added = {pattern for cls in classes for pattern in cls.adds_arrays}
    for cls in classes:
        for pattern in cls.reads_arrays:
            assert pattern in added or matches_any(pattern, added), f"{cls.name} reads {pattern}, which no stage adds"


def test_a_stage_pool_is_read_from_its_entry_and_checked(tmp_path):
    path = _write(tmp_path, """\
        p:
          stages:
            - probe
            - shots:
                pool: {max_workers: 3, cpus: 2}
            - clips
            - encode
            - write
        """)
    shots = load_pipeline("p", path).stages[1]
    assert (shots.pool.max_workers, shots.pool.cpus, shots.pool.min_workers) == (3, 2.0, 1)
    assert "pool" not in shots.params.model_fields_set and "pool" not in shots.lineage()["params"]
    bad = _write(tmp_path, "p:\n  stages:\n    - probe\n    - shots:\n        pool: {max_workrs: 3}\n    - clips\n    - write\n")
    assert f"{bad}:5: shots.pool: max_workrs: Extra inputs are not permitted" in _error(bad)
    with pytest.raises(PipelineError, match="max_workers must be >= min_workers"):
        load_pipeline("ingest", overrides=["shots.pool={min_workers: 4, max_workers: 2}"])
