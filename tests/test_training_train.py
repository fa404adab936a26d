"""The trainer: losses and throughput logged, checkpoints written, resume exact, FSDP on two processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.checkpointing import latest_checkpoint, load_model_weights  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dit import InterActDiT  # noqa: E402
from training.testing import MICRO_DATA, REPO_ROOT, TINY_CONFIG, micro_config, write_micro_corpus, single_torch_thread  # noqa: F401, E402
from training.train import Trainer, data_loader  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_micro_corpus(tmp_path_factory.mktemp("corpus"), clips=3, frames=16)


@pytest.fixture(scope="module")
def batches(corpus, tmp_path_factory):
    """Four fixed batches, so runs can be compared step by step."""
    config = micro_config(corpus, tmp_path_factory.mktemp("unused"))
    trainer = Trainer(config)
    stream = iter(data_loader(config, trainer.companions, rank=0))
    return [next(stream) for _ in range(4)]


def test_trainer_logs_losses_and_throughput_and_saves(corpus, tmp_path):
    config = micro_config(corpus, tmp_path, ["train.steps=2", "train.save_every=2"])
    trainer = Trainer(config)
    metrics = trainer.fit(data_loader(config, trainer.companions, rank=0))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for name in ("loss", "flow", "mask", "lr", "step_time", "tokens_per_s", "grad_norm", "data_wait"):
        assert all(row[name] >= 0 for row in rows), name
    assert all(row["data_wait"] <= row["step_time"] for row in rows)
    assert metrics["loss"] == pytest.approx(metrics["flow"] + metrics["mask"], rel=1e-5)
    assert rows[0]["tokens_per_s"] > 0 and metrics["mask"] > 0
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint.name == "ckpt-00000002"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.safetensors", "optimizer.pt", "scheduler.pt", "state.json"]
    fresh = InterActDiT(config.model)
    load_model_weights(checkpoint, fresh)  # strict: every key of the model is in the checkpoint
    torch.testing.assert_close(fresh.state_dict(), trainer.model.state_dict())


def test_resume_continues_exactly(corpus, batches, tmp_path):
    straight = Trainer(micro_config(corpus, tmp_path / "straight", ["train.steps=4", "train.save_every=100"]))
    straight.fit(batches)

    first = Trainer(micro_config(corpus, tmp_path / "resumed", ["train.steps=2", "train.save_every=2"]))
    first.fit(batches[:2])
    resumed = Trainer(micro_config(corpus, tmp_path / "resumed", ["train.steps=4", "train.save_every=100"]))
    assert resumed.step == 2
    torch.testing.assert_close(resumed.model.state_dict(), first.model.state_dict())
    assert resumed.scheduler.last_epoch == 2
    resumed.fit(batches[2:])
    assert resumed.step == 4
    torch.testing.assert_close(resumed.model.state_dict(), straight.model.state_dict())


def test_fsdp_on_two_cpu_processes(corpus, tmp_path):
    overrides = [arg for item in [*MICRO_DATA, f"data.shards='{corpus}'", f"train.out_dir='{tmp_path}'", "train.steps=2",
                                  "train.save_every=2", "train.grad_checkpointing=true",
                                  "train.checkpoint_policy=save_attention_and_narrow_matmuls"] for arg in ("--set", item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training.train", "--config", str(TINY_CONFIG), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    model = InterActDiT(micro_config().model)
    load_model_weights(latest_checkpoint(tmp_path), model)  # the sharded run's checkpoint loads unsharded


def test_config_overrides_types_and_unknown_keys():
    config = load_config(TINY_CONFIG, ["train.lr=1e-4", "data.batch_size=3", "model.mask_layers=[1, 3]"])
    assert config.train.lr == 1e-4 and isinstance(config.train.lr, float)  # YAML 1.1 reads 1e-4 as a string
    assert config.data.batch_size == 3 and config.model.mask_layer_ids() == [1, 3]
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(TINY_CONFIG, ["train.learning_rate=1e-4"])
