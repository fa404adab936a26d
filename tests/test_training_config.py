"""Training and evaluation configs: every bad key or value fails at load, naming the file and the key."""
import re

import pytest
import yaml

from training import train
from training.config import ConfigError, load_config
from training.evaluate import load_eval_config
from training.testing import REPO_ROOT, TINY_CONFIG

EVAL_CONFIG = REPO_ROOT / "configs" / "eval.yaml"


@pytest.mark.parametrize("override, named", [
    ("train.precision=bf61", "train.precision"),
    ("train.learning_rate=1e-4", "train.learning_rate"),
    ("train.checkpoint_policy=save_everything", "train.checkpoint_policy"),
    ("sample.gate_mode=cached", "sample.gate_mode"),
    ("train.steps=many", "train.steps"),
    ("modle.dim=64", "modle"),
])
def test_a_bad_key_or_value_fails_at_load_naming_the_file_and_the_key(override, named):
    with pytest.raises(ConfigError, match=rf"{re.escape(str(TINY_CONFIG))}: .*{re.escape(named)}"):
        load_config(TINY_CONFIG, [override])


def test_the_error_comes_before_anything_is_built(monkeypatch):
    def build_model(config):
        raise AssertionError("the model was built")

    monkeypatch.setattr(train, "build_model", build_model)
    with pytest.raises(ConfigError, match="train.precision"):
        train.main(["--config", str(TINY_CONFIG), "--set", "train.precision=bf61"])


def test_a_memory_budget_without_compile_fails_at_load():
    with pytest.raises(ConfigError, match="train.activation_memory_budget: needs train.compile"):
        load_config(TINY_CONFIG, ["train.activation_memory_budget=0.5"])
    assert load_config(TINY_CONFIG, ["train.activation_memory_budget=0.5", "train.compile=true"]).train.compile


def test_valid_overrides_round_trip(tmp_path):
    overrides = ["train.precision=fp32", "train.checkpoint_policy=save_attention_and_narrow_matmuls", "train.checkpoint_blocks=2",
                 "sample.gate_mode=current", "train.lr=2e-4", "data.resolutions=[[32, 64]]", "model.mask_layers=[1, 3]"]
    config = load_config(TINY_CONFIG, overrides)
    assert (config.train.precision, config.train.checkpoint_policy, config.train.checkpoint_blocks) == ("fp32", "save_attention_and_narrow_matmuls", 2)
    assert config.sample.gate_mode == "current" and config.train.lr == 2e-4 and config.data.resolutions == [(32, 64)]
    saved = tmp_path / "config.yaml"  # as a checkpoint's state.json records it
    saved.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert load_config(saved) == config


@pytest.mark.parametrize("override, named", [
    ("fvd.frames=4", "fvd.frames"),
    ("identity_sync.scorer=wav2lip", "identity_sync.scorer"),
    ("hands.frame_strid=2", "hands.frame_strid"),
])
def test_a_bad_evaluation_setting_fails_at_load_naming_the_file_and_the_key(override, named):
    with pytest.raises(ConfigError, match=rf"{re.escape(str(EVAL_CONFIG))}: .*{re.escape(named)}"):
        load_eval_config(EVAL_CONFIG, [override])


def test_evaluation_overrides_and_relative_paths():
    config = load_eval_config(EVAL_CONFIG, ["fvd.i3d_path=models/i3d.pt", "hands.frame_stride=2", "device=cuda"])
    assert config.fvd.i3d_path == str(EVAL_CONFIG.parent / "models" / "i3d.pt")  # relative to the config's folder
    assert config.hands.frame_stride == 2 and config.device == "cuda"
