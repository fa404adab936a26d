"""Speaking is speech, not lip motion: the speech stage (Silero VAD) and the speakers stage's gate
on real faces with edited audio (bench/speaking_footage.py builds the footage and its per-second
truth): video5's talking woman with every other second replaced by digital silence (both ways
round), and with her audio replaced by generated music. Gated, the speakers stage must get at
least 90% of the seconds right on each; the stage as it was before gating (no gate, 1-6 s
windows, threshold 0) is measured on the same footage and must do worse."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from conftest import REALDATA, REPO_ROOT
from curation.stage import Item
from stages.models.audio_features import SAMPLE_RATE
from stages.models.vad import CHUNK_SAMPLES, SileroVad, packaged_model_path, speech_segments
from stages.speakers import Speakers, SpeakersParams, energy_gate
from stages.speech import Speech, SpeechParams

sys.path.insert(0, str(REPO_ROOT / "bench"))
import speaking_footage as footage_lib  # noqa: E402

missing = footage_lib.missing_inputs()
needs_data = pytest.mark.skipif(bool(missing) or not REALDATA.is_dir(),
                                reason=f"real footage or weights not found: {', '.join(map(str, missing))}")


@pytest.fixture(scope="module")
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # predictable on a shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stages(threads):
    return footage_lib.stages()


@pytest.fixture(scope="module")
def window(threads):
    return footage_lib.face_window("video5.mp4", 1.0, 10, footage_lib.faces_stage())


@pytest.fixture(scope="module")
def footage(window, stages):
    speech, ours, before = stages
    clips = footage_lib.footage_set(window, speech.vad)
    footage_lib.score(clips, speech, ours, before)
    return clips


def _clip_item(samples: np.ndarray | None, seconds: float = 2.0) -> Item:
    """A clip item with `samples` as its wav member (none: a clip without audio)."""
    item = Item(source_id="s", source_path="s.mp4", key="s-0", clip_index=0, start=0.0, end=seconds)
    item.meta["clips"] = {"fps": 25.0, "n_frames": round(seconds * 25), "width": 64, "height": 64,
                          "has_audio": samples is not None, "duration": seconds}
    if samples is not None:
        item.members["wav"] = footage_lib.wav_bytes(samples)
    return item


@needs_data
def test_vad_equals_the_package_onnx_wrapper(window):
    """Probabilities chunk for chunk as silero_vad's OnnxWrapper gives them (same state and
    context handling), and segments as its get_speech_timestamps gives them."""
    from silero_vad.utils_vad import OnnxWrapper, get_speech_timestamps

    samples = window.samples[:3 * SAMPLE_RATE + 123]  # a partial last chunk
    ours = SileroVad().speech_probability(samples)
    assert ours.shape == (-(-len(samples) // CHUNK_SAMPLES),)
    audio = torch.from_numpy(samples.astype(np.float32) / 32768)
    reference = OnnxWrapper(str(packaged_model_path()), force_onnx_cpu=True)
    np.testing.assert_allclose(ours, reference.audio_forward(audio, SAMPLE_RATE)[0].numpy(), atol=1e-6)
    expected = get_speech_timestamps(audio, reference, return_seconds=True, time_resolution=3)
    assert speech_segments(ours, len(samples)) == [(pytest.approx(s["start"], abs=1e-3), pytest.approx(s["end"], abs=1e-3))
                                                   for s in expected]
    assert expected  # she speaks


@needs_data
def test_speech_stage_finds_speech_only_outside_the_pauses(window, stages):
    speech = stages[0]
    silent = [1, 3, 5, 7, 9]
    item = _clip_item(footage_lib.with_pauses(window.samples, silent), seconds=10.0)
    speech.process_item(item)
    active = item.arrays["speech.active"]
    assert item.kept and active.dtype == bool and active.shape == (250,)
    for second in range(10):
        spoken = active[second * 25:(second + 1) * 25].mean()
        assert spoken < 0.2 if second in silent else spoken > 0.5, (second, spoken)
    segments = item.meta["speech"]["segments"]
    assert segments and all(0 <= start < end <= 10.0 for start, end in segments)
    assert item.scores["speech.n_segments"] == len(segments)
    assert 0.4 < item.scores["speech.speech_fraction"] < 0.6


def test_speech_stage_without_audio_records_no_speech_and_rejects_a_bad_wav():
    speech = Speech(SpeechParams())
    speech.setup()
    item = _clip_item(None)
    speech.process_item(item)
    assert item.kept and item.meta["speech"] == {"segments": [], "has_audio": False}
    assert item.scores["speech.speech_fraction"] == 0.0 and not item.arrays["speech.active"].any()

    item = _clip_item(np.zeros(2 * SAMPLE_RATE, dtype=np.int16))  # digital silence
    speech.process_item(item)
    assert item.kept and item.meta["speech"]["segments"] == [] and item.meta["speech"]["has_audio"]

    item = _clip_item(np.zeros(10, dtype=np.int16))
    buffer = io.BytesIO()
    wavfile.write(buffer, 44100, np.zeros(44100, dtype=np.int16))
    item.members["wav"] = buffer.getvalue()
    speech.process_item(item)
    assert item.reject.reason == "bad_audio" and "44100" in item.reject.detail


def test_energy_gate_closes_digital_silence_and_near_silence():
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(4 * SAMPLE_RATE) * 3000).astype(np.int16)
    samples[SAMPLE_RATE:2 * SAMPLE_RATE] = 0  # digital silence
    samples[2 * SAMPLE_RATE:3 * SAMPLE_RATE] //= 300  # about 50 dB down
    gate = energy_gate(samples, -40.0)
    assert gate.shape == (100,)
    assert gate[:25].all() and not gate[25:75].any() and gate[75:].all()
    assert not energy_gate(np.zeros(SAMPLE_RATE, dtype=np.int16), -40.0).any()


@needs_data
def test_speech_gate_needs_the_speech_stage(window):
    item = footage_lib.footage_item(footage_lib.Footage("x", "pauses", window, window.samples, np.ones(10, bool)))
    with pytest.raises(ValueError, match="speech stage"):
        Speakers(SpeakersParams(gate="speech")).process_item(item)


@needs_data
def test_the_gate_used_is_recorded(footage):
    assert all(clip.gate == {"speech gate": "speech", "before": "none"} for clip in footage)


@needs_data
@pytest.mark.parametrize("kind", ["pauses", "music"])
def test_per_second_speaking_accuracy_gated_beats_ungated(footage, kind):
    truth_seconds = sum(len(clip.truth) for clip in footage if clip.kind == kind)
    gated = footage_lib.accuracy(footage, kind, "speech gate")
    before = footage_lib.accuracy(footage, kind, "before")
    print(f"{kind}: {truth_seconds} s, gated {gated:.2f}, before gating {before:.2f}")
    assert gated >= 0.9
    assert before < gated
