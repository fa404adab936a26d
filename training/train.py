"""Train InterActHuman on curated shards.

    python -m training.train --config configs/model_tiny.yaml [--set train.steps=100 ...]
    torchrun --nproc_per_node 8 -m training.train --config configs/model_wan1_3b.yaml

One process per GPU; with more than one, the DiT is sharded with FSDP (one unit per block, bf16
parameters, float32 gradient reduction). bf16 autocast in both cases (over float32 weights on one GPU). Losses,
learning rate and throughput go to the console and to OUT/metrics.jsonl; checkpoints to OUT/ckpt-<step>.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from tqdm import tqdm

from training.activation_checkpointing import apply_activation_checkpointing
from training.batch import ModelInputs, prepare_inputs
from training.build import Companions, build_companions, build_model
from training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import Config, TrainConfig, load_config
from training.data import training_stream
from training.dit import AudioGate, InterActDiT
from training.layers import attention_backend
from training.flow import TIMESTEP_SCALE, add_noise, sample_training_sigmas, velocity_target
from training.losses import flow_matching_loss, mask_loss, token_validity


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def setup(cls) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        cuda = torch.cuda.is_available()
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        return cls(dist.get_rank() if dist.is_initialized() else 0, world_size, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """Noise and dropout draws depend only on (seed, rank, step): a resumed run repeats them exactly."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step) % (2**63))


def training_losses(model, inputs: ModelInputs, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Flow matching on the video latents + focal loss on every predictor layer's masks.

    Audio is gated by the ground-truth masks (binarised at 0.5). With probability cond_dropout a sample is
    unconditional: zero text and muted audio everywhere, as the CFG branch at inference.
    """
    latents = inputs.latents
    batch, device = latents.shape[0], latents.device
    sigmas = sample_training_sigmas(batch, config.shift, generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    keep = (torch.rand(batch, generator=generator) >= config.cond_dropout).to(device)
    targets = (inputs.masks > 0.5).float()
    output = model(
        add_noise(latents, noise, sigmas),
        sigmas * TIMESTEP_SCALE,
        inputs.text * keep[:, None, None],
        inputs.ref_latents,
        inputs.audio,
        inputs.audio_muted,
        AudioGate("masks", targets * keep[:, None, None]),
    )
    flow = flow_matching_loss(output.velocity, velocity_target(latents, noise))
    valid = token_validity(inputs.conf, inputs.num_video_tokens // inputs.conf.shape[-1])
    masks = mask_loss(output.mask_logits, targets, valid, config.focal_alpha, config.focal_gamma)
    return {"loss": flow + config.mask_loss_weight * masks, "flow": flow, "mask": masks}


def tokens_per_sample(inputs: ModelInputs, patch_size) -> int:
    """Video plus reference tokens one sample puts through the DiT."""
    refs = inputs.ref_latents
    ref_tokens = refs.shape[1] * refs.shape[-2] * refs.shape[-1] // (patch_size[1] * patch_size[2])
    return inputs.num_video_tokens + ref_tokens


def compile_blocks(model: InterActDiT, train: TrainConfig) -> None:
    """torch.compile per block, after activation checkpointing (so compile plans the recomputation with
    the checkpoint policy) and before FSDP; with train.activation_memory_budget, compile's partitioner
    keeps that share of each block's activations and recomputes the cheapest rest."""
    if train.activation_memory_budget is not None:
        from torch._functorch import config as functorch_config

        functorch_config.activation_memory_budget = train.activation_memory_budget
    for block in model.blocks:
        block.compile()


class Trainer:
    def __init__(self, config: Config, companions: Companions | None = None):
        self.config = config
        self.dist = Distributed.setup()
        self.device = self.dist.device
        torch.manual_seed(config.train.seed)
        self.companions = companions or build_companions(config, self.device)
        self.model = self._prepare_model(build_model(config).to(self.device))
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay, betas=(0.9, 0.999))
        warmup = max(config.train.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.step = 0
        self.out_dir = Path(config.train.out_dir)
        if config.train.resume and (checkpoint := latest_checkpoint(self.out_dir)) is not None:
            self.step = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
            self._log(f"resumed from {checkpoint} at step {self.step}")

    @property
    def uses_fsdp(self) -> bool:
        return self.dist.world_size > 1

    @property
    def bf16(self) -> bool:
        return self.config.train.precision == "bf16" and self.device.type == "cuda"

    def _prepare_model(self, model):
        train = self.config.train
        if not train.train_base:
            base = set(model.base_parameter_names())
            for name, param in model.named_parameters():
                param.requires_grad_(name not in base)
        apply_activation_checkpointing(model, train)
        if train.compile:
            compile_blocks(model, train)
        if self.uses_fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if self.bf16 else None, reduce_dtype=torch.float32)
            for block in model.blocks:
                fully_shard(block, mp_policy=policy)
            fully_shard(model, mp_policy=policy)
        return model.train()

    def _autocast(self):
        # Also under FSDP (bf16 parameters): the residual stream and adaLN stay float32, as in Wan2.1,
        # and autocast casts the matmul inputs to match.
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def train_step(self, batch: dict) -> dict[str, float]:
        inputs = prepare_inputs(batch, self.companions.vae, self.companions.text_encoder, self.companions.geometry, self.device)
        generator = step_generator(self.config.train.seed, self.dist.rank, self.step)
        with self._autocast(), attention_backend(self.config.train.attention_backend):
            losses = training_losses(self.model, inputs, self.config.train, generator)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        values = {name: value.detach() for name, value in losses.items()}
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        values["grad_norm"] = grad_norm.detach()
        values["tokens"] = torch.tensor(float(tokens_per_sample(inputs, self.config.model.patch_size) * inputs.latents.shape[0]))
        return values

    def fit(self, batches: Iterable[dict], steps: int | None = None) -> dict[str, float]:
        """Train until `steps` (default train.steps) or train.max_minutes; returns the last logged metrics."""
        target = steps if steps is not None else self.config.train.steps
        log_every, save_every = self.config.train.log_every, self.config.train.save_every
        deadline = None if self.config.train.max_minutes is None else time.monotonic() + 60 * self.config.train.max_minutes
        window: list[dict[str, torch.Tensor]] = []
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        with self._progress(target) as progress:
            for batch, data_wait in _timed(batches):
                if deadline is not None and self._all_past(deadline):
                    target = self.step  # the time budget ends the run here
                if self.step >= target:
                    break
                window.append({**self.train_step(batch), "data_wait": torch.tensor(data_wait)})
                if self.step % log_every == 0 or self.step == target:
                    metrics = self._report(window, time.perf_counter() - started)
                    window, started = [], time.perf_counter()
                    progress.set_postfix_str(f"loss {metrics['loss']:.4f} flow {metrics['flow']:.4f} mask {metrics['mask']:.4f} {metrics['tokens_per_s']:.0f} tok/s")
                progress.update(1)
                if self.step % save_every == 0 or self.step == target:
                    self.save()
        if window:
            metrics = self._report(window, time.perf_counter() - started)
        if self.step % save_every and self.step == target:
            self.save()
        return metrics

    def _all_past(self, deadline: float) -> bool:
        """Whether the deadline passed, agreed by all ranks so they stop at the same step."""
        past = torch.tensor(float(time.monotonic() >= deadline), device=self.device)
        if dist.is_initialized():
            dist.all_reduce(past, op=dist.ReduceOp.MAX)
        return bool(past.item())

    def _report(self, window: list[dict[str, torch.Tensor]], seconds: float) -> dict[str, float]:
        """Average a log window over steps (and ranks), print it and append it to metrics.jsonl."""
        stacked = torch.stack([torch.stack([w[k].float().to(self.device) for k in sorted(window[0])]) for w in window]).mean(0)
        if dist.is_initialized():
            dist.all_reduce(stacked, op=dist.ReduceOp.AVG)
        metrics = dict(zip(sorted(window[0]), stacked.tolist()))
        tokens = metrics.pop("tokens") * len(window) * self.dist.world_size
        metrics.update(step=self.step, lr=self.scheduler.get_last_lr()[0], step_time=seconds / len(window),
                       tokens_per_s=tokens / seconds, samples_per_s=len(window) * self.dist.world_size * self.config.data.batch_size / seconds)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
            if not sys.stdout.isatty():
                self._log(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def _progress(self, target: int) -> tqdm:
        """A progress bar on a terminal; log lines (from _report) otherwise."""
        return tqdm(total=target, initial=self.step, desc="train", dynamic_ncols=True, disable=not (self.dist.is_main and sys.stdout.isatty()))

    def save(self) -> Path | None:
        extra = {"config": self.config.model_dump(mode="json")}
        return save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, self.scheduler, extra)

    def _log(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)


def _timed(batches: Iterable[dict]) -> Iterator[tuple[dict, float]]:
    """Each batch with the seconds spent waiting for it: a step time mostly spent here means the data
    loader, not the GPU, sets the pace."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - started


def data_loader(config: Config, companions: Companions, rank: int) -> torch.utils.data.DataLoader:
    stream = training_stream(config.data, companions.geometry, companions.featurizer, config.train.seed + 1000 * rank)
    workers = config.data.num_workers
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=workers > 0, prefetch_factor=4 if workers else None)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value (YAML)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    trainer = Trainer(config)
    metrics = trainer.fit(data_loader(config, trainer.companions, trainer.dist.rank))
    if dist.is_initialized():
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
