"""Reading synthetic shards written in the sample format: members, decoding, per-identity audio,
token masks and confidences, reference augmentation, buckets."""
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from training.audio import AudioFeaturizer
from training.data import (
    ExampleMaker, augment_reference, bucket_batches, identity_audio, read_clips, shard_urls, speaking_samples, training_stream,
)
from training.synthetic import SyntheticSpec, write_corpus
from training.testing import micro_config, write_micro_corpus, single_torch_thread  # noqa: F401
from training.vae import vae_geometry


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_micro_corpus(tmp_path_factory.mktemp("corpus"), clips=3, frames=24)


@pytest.fixture(scope="module")
def clips(corpus):
    return list(read_clips(corpus))


def test_shards_hold_the_contract_members(corpus):
    urls = shard_urls(corpus)
    assert [Path(u).name for u in urls] == ["shard-000000.tar", "shard-000001.tar"]
    with tarfile.open(urls[0]) as tar:
        names = tar.getnames()
    keys = {name.split(".", 1)[0] for name in names}
    assert len(keys) == 2 and all(re.fullmatch(r"[0-9a-f]{16}-\d{4}", key) for key in keys)
    members = {name.split(".", 1)[1] for name in names}
    assert members == {"mp4", "wav", "json", "masks.npz", "speak.npz", "pose.npz", "ref_0.png", "ref_1.png", "face_0.png", "face_1.png"}


def test_corpus_written_by_several_processes_is_the_same(corpus, tmp_path):
    parallel = tmp_path / "parallel"
    write_corpus(parallel, 3, 0, SyntheticSpec(frames=24), clips_per_shard=2, workers=2)

    def members(shard_glob):
        contents = {}
        for url in shard_urls(shard_glob):
            with tarfile.open(url) as tar:
                contents.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
        return contents

    assert members(str(parallel / "shards" / "shard-*.tar")) == members(corpus)
    assert not list(parallel.glob("shards/*.tmp"))


def test_decoded_clip(clips):
    clip = clips[0]
    assert len(clips) == 3 and clip.num_identities == 2
    assert clip.frames.shape == (24, 64, 128, 3) and clip.fps == 25.0
    assert clip.masks.shape == (2, 24, 64, 128) and clip.masks.dtype == np.uint8
    assert clip.conf.shape == clip.speak.shape == (2, 24)
    assert len(clip.audio) == 24 * 640 and clip.segments is not None


def test_identity_audio_is_the_clip_audio_where_it_speaks(clips):
    for clip in clips:
        tracks = [identity_audio(clip, i) for i in range(2)]
        speaking = [speaking_samples(clip, i, len(clip.audio)) for i in range(2)]
        for track, where in zip(tracks, speaking):
            np.testing.assert_array_equal(track[where], clip.audio[where])
            assert not track[~where].any()  # silence elsewhere
        assert not (speaking[0] & speaking[1]).any()  # one talks at a time
        np.testing.assert_allclose(tracks[0] + tracks[1], clip.audio, atol=1e-6)


def test_speaking_falls_back_to_scores_without_segments(clips):
    clip = clips[0]
    from_segments = speaking_samples(clip, 0, len(clip.audio))
    clip_without = type(clip)(**{**clip.__dict__, "segments": None})
    from_scores = speaking_samples(clip_without, 0, len(clip.audio))
    assert (from_scores == from_segments).mean() > 0.97  # they differ only inside the frame at a turn change


def test_example_from_a_clip(clips):
    config = micro_config()
    geometry = vae_geometry(config.vae, config.model.patch_size)
    maker = ExampleMaker(config.data, geometry, AudioFeaturizer(config.audio), seed=0)
    clip = clips[1]
    example = maker(clip)
    assert example["video"].shape == (8, 32, 64, 3) and example["video"].dtype == torch.uint8
    assert example["refs"].shape == (2, 16, 16, 3)
    assert example["token_masks"].shape == (2, 2, 4, 8) and example["token_conf"].shape == (2, 2)
    assert example["audio"].shape == (2, 8, 32) and example["audio_muted"].shape == (8, 32)
    masks = example["token_masks"]
    assert ((masks >= 0) & (masks <= 1)).all() and (masks > 0.5).any()
    assert not ((masks[0] > 0.5) & (masks[1] > 0.5)).any()  # the figures never overlap

    # A silent identity's features equal those of silence (log-mel is local: away from its speech).
    speaking = example["speaking"]
    quiet = [(i, t) for i in range(2) for t in range(8) if not speaking[i, max(t - 2, 0) : t + 3].any()]
    assert quiet
    for identity, t in quiet:
        torch.testing.assert_close(example["audio"][identity, t], example["audio_muted"][t])


def test_low_confidence_flags_reach_latent_frames(clips):
    config = micro_config(extra=["data.frame_counts=[24]"])
    geometry = vae_geometry(config.vae, config.model.patch_size)
    conf = np.ones_like(clips[2].conf)
    conf[0, 5] = 0.3  # video frame 5 lies in latent frame 1 (frames 4..7)
    clip = type(clips[2])(**{**clips[2].__dict__, "conf": conf})
    example = ExampleMaker(config.data, geometry, AudioFeaturizer(config.audio), seed=0)(clip)
    assert example["token_conf"][0].tolist() == [1.0, pytest.approx(0.3), 1.0, 1.0, 1.0, 1.0]


def test_reference_augmentation():
    rng = np.random.default_rng(0)
    body = np.full((40, 20, 3), 255, np.uint8)
    body[4:36, 5:15] = 60  # the figure
    face = np.zeros((8, 8, 3), np.uint8)
    assert augment_reference(body, face, {"face": 1.0}, rng) is face
    assert augment_reference(body, None, {"face": 1.0}, rng).shape[0] == round(0.22 * 32)  # head of the figure
    assert augment_reference(body, face, {"body": 1.0}, rng) is body
    clothing = augment_reference(body, face, {"clothing": 1.0}, rng)
    assert (clothing[:11] == 255).all() and (clothing[11:36, 5:15] == 60).all()
    kinds = [augment_reference(body, face, {"face": 0.7, "body": 0.3}, rng) is face for _ in range(2000)]
    assert abs(np.mean(kinds) - 0.7) < 0.04


def test_buckets_never_mix_sizes_or_identity_counts():
    def example(height, refs):
        return {"video": torch.zeros(8, height, 64, 3), "refs": torch.zeros(refs, 16, 16, 3), "key": f"{height}-{refs}"}

    stream = [example(32, 2), example(64, 2), example(32, 1), example(32, 2), None, example(64, 2), example(32, 1)]
    batches = list(bucket_batches(stream, batch_size=2))
    assert [tuple(b["video"].shape[:3]) + (b["refs"].shape[1],) for b in batches] == [(2, 8, 32, 2), (2, 8, 64, 2), (2, 8, 32, 1)]


def test_training_stream_yields_bucketed_batches(corpus):
    config = micro_config(corpus)
    geometry = vae_geometry(config.vae, config.model.patch_size)
    batch = next(iter(training_stream(config.data, geometry, AudioFeaturizer(config.audio), seed=0)))
    assert batch["video"].shape == (2, 8, 32, 64, 3) and len(batch["key"]) == 2


def test_reference_probabilities_are_validated():
    from training.config import load_config

    with pytest.raises(ValueError, match="data.ref_probs"):
        load_config("configs/model_tiny.yaml", ["data.ref_probs={body:1.0}"])  # YAML: one key "body:1.0", no value
    assert load_config("configs/model_tiny.yaml", ["data.ref_probs={body: 1.0}"]).data.ref_probs == {"body": 1.0}
