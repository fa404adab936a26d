"""Footage with a known per-second "someone speaks" truth, and the speaking accuracy of the
speakers stage on it: with the speech gate (the speech stage's Silero VAD), with the energy gate
(no speech stage), without a gate, and as it was before gating (no gate, evaluate_network's 1-6 s
windows, threshold 0). Used by tests/test_speaking_gate.py and printed by the fidelity bench.

The footage is real faces with edited audio:
* the talking clip: video5.mp4 (data-juicer test data) 1-11 s, one woman talking to the camera.
  Truth in the original: speech in every second (Silero at the package's default threshold 0.5
  finds one segment over 0.7-11.7 s, and the spectrogram shows voiced speech throughout);
* pauses: the same 10 s twice, once with the odd and once with the even seconds replaced by
  digital silence (zeros in the 16 kHz PCM), so that every second is once speech and once a
  pause (20 labelled seconds; truth: speech exactly in the seconds left intact);
* music: the same faces with the audio replaced by generated music without speech (chords with
  tremolo, a bass line, a plucked melody, kick, snare and hi-hat; numpy, fixed seed); truth: no
  second speaks;
* the bench adds: the same faces over real instrumental music (video2.mp4's soundtrack, in which
  Silero finds no speech), speech mixed over that music at 5 dB with the pauses still playing
  music, and video4.mp4 13-22 s (a girl talking with her face often covered; two face tracks)
  with pauses and with music. Truth for video4 is the original's speech per second by the same
  VAD rule as video5.
Per-second accuracy: second s is predicted speaking when some face track speaks in at least half
of its 25 frames (from the speakers stage's segments); accuracy is the fraction of seconds whose
prediction equals the truth.
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import wavfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared clip helpers

from clip_cutting import decode_frames_25fps, wav_16k_bytes  # noqa: E402
from curation.stage import ClipFrames, Item  # noqa: E402
from stages.faces import Faces, FacesParams  # noqa: E402
from stages.models.audio_features import SAMPLE_RATE, VIDEO_FPS  # noqa: E402
from stages.models.light_asd import EVALUATE_DURATIONS_S  # noqa: E402
from stages.models.vad import SegmentRule, SileroVad, frames_in_segments, speech_segments  # noqa: E402
from stages.speakers import Speakers, SpeakersParams, energy_gate, frames_allowed, speaking_mask  # noqa: E402
from stages.speech import Speech, SpeechParams  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
CLIPS = REALDATA / "data-juicer" / "tests" / "ops" / "data"
TALKSET = REALDATA / "Light-ASD" / "weight" / "finetuning_TalkSet.model"
YUNET = REALDATA / "libfacedetection.train" / "onnx" / "yunet_n_dynamic.onnx"
VOICE_OVER = REALDATA / "pyannote-audio" / "tutorials" / "assets" / "sample.wav"  # two other people talking
NEEDED = (CLIPS / "video5.mp4", TALKSET, YUNET, VOICE_OVER)
# the speakers stage before gating: evaluate_network's windows, threshold 0, no gate
BEFORE = {"durations_s": EVALUATE_DURATIONS_S, "threshold": 0.0, "gate": "none"}


@dataclass
class Window:
    """A window of a real clip with its faces found once: the item the faces stage handed on
    (tracks and crops, no audio yet) and the window's original 16 kHz audio."""

    name: str
    item: Item
    samples: np.ndarray

    @property
    def seconds(self) -> int:
        return self.item.meta["clips"]["n_frames"] // round(VIDEO_FPS)


@dataclass
class Footage:
    """A window's faces with audio `samples` (int16 16 kHz) and the truth per second."""

    name: str
    kind: str  # "pauses" or "music"
    window: Window
    samples: np.ndarray
    truth: np.ndarray
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # per-second, by configuration
    gate: dict[str, str] = field(default_factory=dict)  # the gate the speakers stage recorded, by configuration


def missing_inputs() -> list[Path]:
    return [path for path in NEEDED if not path.exists()]


def face_window(clip: str, start: float, seconds: int, faces: Faces) -> Window:
    """Decode `seconds` of `clip` from `start` at 25 fps and run the faces stage on it once."""
    path = CLIPS / clip
    n_frames = seconds * round(VIDEO_FPS)
    frames = decode_frames_25fps(path, start, n_frames)
    item = Item(source_id=clip, source_path=str(path), key=f"{Path(clip).stem}-{start:g}", clip_index=0,
                start=start, end=start + seconds)
    item.meta["clips"] = {"fps": VIDEO_FPS, "n_frames": n_frames, "width": frames.shape[2],
                          "height": frames.shape[1], "has_audio": True, "duration": float(seconds)}
    item.frames = {spec: ClipFrames(frames, np.arange(n_frames) / VIDEO_FPS, 1.0)
                   for spec in faces.frame_specs()}
    faces.process_item(item)
    item.frames = None
    item.arrays = {name: array for name, array in item.arrays.items() if name.endswith("gray112")}
    samples = read_samples(wav_16k_bytes(path, start, seconds))
    return Window(Path(clip).stem, item, samples)


def faces_stage() -> Faces:
    """The faces stage as the talking pipeline configures it."""
    stage = Faces(FacesParams(backend="onnxruntime", model_path=str(YUNET)))
    stage.setup()
    return stage


def with_pauses(samples: np.ndarray, silent_seconds) -> np.ndarray:
    """A copy with the given whole seconds replaced by digital silence."""
    out = samples.copy()
    for second in silent_seconds:
        out[second * SAMPLE_RATE:(second + 1) * SAMPLE_RATE] = 0
    return out


_CHORDS = [(261.63, 329.63, 392.00), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63),
           (196.00, 246.94, 293.66)]  # C, Am, F, G
_MELODY = [523.25, 587.33, 659.26, 783.99, 880.00, 1046.50]  # C major pentatonic, an octave up


def _tone(freq: float, t: np.ndarray, harmonics: int = 4) -> np.ndarray:
    return sum(np.sin(2 * np.pi * k * freq * t) / k for k in range(1, harmonics + 1))


def synth_music(seconds: float, seed: int = 0) -> np.ndarray:
    """int16 16 kHz music without speech at 120 bpm: chords (2 s each) with 5 Hz tremolo, a plucked
    bass on every beat, a plucked melody in eighth notes with vibrato, kick, snare and hi-hat."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    beat = 0.5
    chord = np.array([_CHORDS[int(x // 2) % 4] for x in t[::SAMPLE_RATE // 10]])  # every 0.1 s
    roots = np.repeat(chord, SAMPLE_RATE // 10, axis=0)[:n]
    out += 0.08 * sum(_tone(1, t * roots[:, i]) for i in range(3)) * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    out += 0.25 * np.exp(-(t % beat) / 0.2) * _tone(1, t * roots[:, 0] / 2, 3)
    for index, at in enumerate(np.arange(0, seconds, beat / 2)):
        first = round(at * SAMPLE_RATE)
        m = min(n - first, round(0.3 * SAMPLE_RATE))
        local = np.arange(m) / SAMPLE_RATE
        part = out[first:first + m]
        if index % 2 == 0:  # a beat: kick (a falling sine), snare on the off-beats
            part += 0.6 * np.sin(2 * np.pi * (50 * local + 3.5 * (1 - np.exp(-local / 0.05)))) * np.exp(-local / 0.12)
            if index % 4 == 2:
                part += 0.3 * rng.standard_normal(m) * np.exp(-local / 0.08)
        part[:800] += 0.1 * np.diff(rng.standard_normal(min(m, 800) + 1)) * np.exp(-local[:800] / 0.02)
        freq = _MELODY[rng.integers(len(_MELODY))]
        note = min(m, round(beat / 2 * SAMPLE_RATE))
        phase = 2 * np.pi * np.cumsum(freq * (1 + 0.01 * np.sin(2 * np.pi * 6 * local[:note]))) / SAMPLE_RATE
        part[:note] += 0.12 * np.sin(phase) * (1 - np.exp(-local[:note] / 0.01)) * np.exp(-local[:note] / 0.3)
    return (out * (0.7 / np.abs(out).max()) * 32767).astype(np.int16)


def mixed(speech: np.ndarray, music: np.ndarray, snr_db: float) -> np.ndarray:
    """Speech over music at `snr_db` (speech RMS over its non-silent samples against the music's)."""
    speech, music = speech.astype(np.float64), music[:len(speech)].astype(np.float64)
    rms = lambda x: np.sqrt(np.mean(x[x != 0] ** 2))  # noqa: E731
    out = speech + music * rms(speech) / rms(music) / 10 ** (snr_db / 20)
    return (out * (0.7 * 32767 / np.abs(out).max())).astype(np.int16)


def speech_per_second(samples: np.ndarray, vad: SileroVad, seconds: int) -> np.ndarray:
    """bool per second: Silero at the package's defaults finds speech in most of it (the truth
    rule for the original audio)."""
    segments = speech_segments(vad.speech_probability(samples), len(samples), SegmentRule())
    return per_second(frames_in_segments(segments, seconds * round(VIDEO_FPS), VIDEO_FPS))


def per_second(frames: np.ndarray) -> np.ndarray:
    """bool per whole second: True in at least half of its 25 frames."""
    fps = round(VIDEO_FPS)
    seconds = len(frames) // fps
    return frames[:seconds * fps].reshape(seconds, fps).mean(axis=1) >= 0.5


def footage_set(window: Window, vad: SileroVad, music: np.ndarray | None = None,
                extra: bool = False) -> list[Footage]:
    """Pauses (odd seconds silenced, even seconds silenced) and music footage of a window;
    `extra` adds real music and speech over music with the pauses playing music."""
    seconds = window.seconds
    spoken = speech_per_second(window.samples, vad, seconds)
    music = synth_music(len(window.samples) / SAMPLE_RATE) if music is None else music
    out = []
    for parity in (1, 0):
        silent = list(range(parity, seconds, 2))
        truth = spoken & ~np.isin(np.arange(seconds), silent)
        paused = with_pauses(window.samples, silent)
        out.append(Footage(f"{window.name} pauses", "pauses", window, paused, truth))
    out.append(Footage(f"{window.name} synthetic music", "music", window, music, np.zeros(seconds, bool)))
    if extra:
        real = real_music(len(window.samples))
        out.append(Footage(f"{window.name} over video2's music", "music", window, real, np.zeros(seconds, bool)))
        for parity in (1, 0):
            pauses = out[1 - parity]
            out.append(Footage(f"{window.name} speech over music, pauses with music", "pauses", window,
                               mixed(pauses.samples, real, 5.0), pauses.truth))
    return out


def voice_over(window: Window) -> Footage:
    """The window's talking face with other people's speech as its audio (pyannote's sample.wav):
    speech is there, but the face on screen says none of it."""
    samples = read_samples(VOICE_OVER.read_bytes())[:len(window.samples)]
    return Footage(f"{window.name} with another voice (voice-over)", "voice-over", window, samples,
                   np.zeros(window.seconds, bool))


def real_music(n_samples: int) -> np.ndarray:
    """video2.mp4's soundtrack (instrumental music) from 1 s on, `n_samples` long."""
    return read_samples(wav_16k_bytes(CLIPS / "video2.mp4", 1.0, n_samples / SAMPLE_RATE))[:n_samples]


def read_samples(wav: bytes) -> np.ndarray:
    return wavfile.read(io.BytesIO(wav))[1]


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, SAMPLE_RATE, samples.astype(np.int16))
    return buffer.getvalue()


def footage_item(footage: Footage) -> Item:
    """A fresh item of the footage: the window's faces hand-off with the footage's wav."""
    base = footage.window.item
    return Item(source_id=base.source_id, source_path=base.source_path, key=base.key, clip_index=0,
                start=base.start, end=base.end, members={"wav": wav_bytes(footage.samples)},
                meta={"clips": dict(base.meta["clips"]), "faces": base.meta["faces"]},
                arrays=dict(base.arrays))


def speaking_seconds(item: Item) -> np.ndarray:
    """bool per second: some track of the speakers stage's meta speaks in most of its frames."""
    n_frames = item.meta["clips"]["n_frames"]
    speaking = np.zeros(n_frames, dtype=bool)
    for track in item.meta["speakers"]["tracks"]:
        for start, end in track["segments"]:
            speaking[round(start * VIDEO_FPS):round(end * VIDEO_FPS)] = True
    return per_second(speaking)


def gated_seconds(item: Item, gate: np.ndarray | None, params: SpeakersParams) -> np.ndarray:
    """bool per second from the scores the speakers stage left on `item`, under another gate."""
    speaking = np.zeros(item.meta["clips"]["n_frames"], dtype=bool)
    for track in item.meta["faces"]["tracks"]:
        frames = np.asarray(track["frames"])
        mask = speaking_mask(frames, item.arrays[f"speakers.track{track['id']}.score"],
                             None if gate is None else frames_allowed(gate, frames), params.threshold,
                             params.smooth_frames, round(params.min_segment_s * VIDEO_FPS))
        speaking[frames[mask]] = True
    return per_second(speaking)


def score(footage: list[Footage], speech: Speech, ours: Speakers, before: Speakers,
          variants: bool = False) -> None:
    """Fill each footage's per-second predictions: "speech gate" (the speech stage, then speakers
    with its defaults) and "before" (speakers as it was); with `variants`, also "energy gate" and
    "no gate" (our scores under those gates)."""
    for clip in footage:
        item = footage_item(clip)
        speech.process_item(item)
        ours.process_item(item)
        clip.predicted["speech gate"] = speaking_seconds(item)
        clip.gate["speech gate"] = item.meta["speakers"]["gate"]
        if variants:
            energy = energy_gate(clip.samples, ours.params.energy_floor_db)
            clip.predicted["energy gate"] = gated_seconds(item, energy, ours.params)
            clip.predicted["no gate"] = gated_seconds(item, None, ours.params)
        old = footage_item(clip)
        before.process_item(old)
        clip.predicted["before"] = speaking_seconds(old)
        clip.gate["before"] = old.meta["speakers"]["gate"]


def accuracy(footage: list[Footage], kind_or_name: str, config: str) -> float:
    """Per-second accuracy over the footage of that kind (or name), all its seconds together."""
    chosen = [f for f in footage if kind_or_name in (f.kind, f.name)]
    hits = sum(int((f.predicted[config] == f.truth).sum()) for f in chosen)
    return hits / sum(len(f.truth) for f in chosen)


def stages(num_threads: int = 1) -> tuple[Speech, Speakers, Speakers]:
    """The speech stage, speakers with its defaults, and speakers as it was before gating."""
    speech = Speech(SpeechParams(num_threads=num_threads))
    ours = Speakers(SpeakersParams(model_path=str(TALKSET), num_threads=num_threads))
    before = Speakers(SpeakersParams(model_path=str(TALKSET), num_threads=num_threads, **BEFORE))
    for stage in (speech, ours, before):
        stage.setup()
    return speech, ours, before


def speaking_accuracy_rows(num_threads: int = 1) -> list[dict]:
    """Per footage: its seconds and the per-second accuracy of "speech gate" (ours: speech stage +
    speakers defaults), "energy gate" (ours without a speech stage), "no gate" (our smoothing and
    threshold, ungated) and "before" (no gate, 1-6 s windows, threshold 0)."""
    missing = missing_inputs()
    if missing:
        return [{"footage": "skipped", "missing": [str(p) for p in missing]}]
    speech, ours, before = stages(num_threads)
    faces = faces_stage()
    video5 = face_window("video5.mp4", 1.0, 10, faces)
    footage = footage_set(video5, speech.vad, extra=True) + [voice_over(video5)]
    footage += footage_set(face_window("video4.mp4", 13.0, 9, faces), speech.vad)
    score(footage, speech, ours, before, variants=True)
    rows = []
    for name in dict.fromkeys(f.name for f in footage):
        chosen = [f for f in footage if f.name == name]
        row = {"footage": name, "seconds": sum(len(f.truth) for f in chosen),
               "speaking_seconds": int(sum(f.truth.sum() for f in chosen))}
        row.update({config: round(accuracy(footage, name, config), 3)
                    for config in ("speech gate", "energy gate", "no gate", "before")})
        rows.append(row)
    return rows


VAD_RULES = {"0.5 (package default)": SegmentRule(0.5), "0.35": SegmentRule(0.35),
             "0.25 (speech stage default)": SegmentRule(0.25), "0.2": SegmentRule(0.2),
             "0.15, ends below 0.075": SegmentRule(0.15, 0.075)}


def vad_calibration_rows() -> list[dict]:
    """The speech stage's threshold: per-second accuracy of Silero's speech segments alone (no
    faces) per audio and threshold. Audio: video5 1-11 s and video4 13-22 s (speech throughout),
    video3 24-30 s (dialogue under loud music; subtitled throughout), video2's music and the
    generated music (no speech), video5 and video4 with pauses as digital silence, and video5's
    pauses with music mixed in at 10, 5 and 0 dB that keeps playing in the pauses (both pause
    patterns each)."""
    missing = missing_inputs()
    if missing:
        return [{"audio": "skipped", "missing": [str(p) for p in missing]}]
    clip = lambda name, start, seconds: read_samples(wav_16k_bytes(CLIPS / name, start, seconds))  # noqa: E731
    speech5 = clip("video5.mp4", 1.0, 10)
    audios = {"video5 speech": (speech5, np.ones(10, bool)),
              "video4 speech": (clip("video4.mp4", 13.0, 9), np.ones(9, bool)),
              "video3 speech under music": (clip("video3.mp4", 24.0, 6), np.ones(6, bool)),
              "video2 music": (real_music(22 * SAMPLE_RATE), np.zeros(22, bool)),
              "generated music": (synth_music(20), np.zeros(20, bool))}
    real = real_music(len(speech5))
    for parity in (1, 0):
        for name, speech in (("video5", speech5), ("video4", audios["video4 speech"][0])):
            seconds = len(speech) // SAMPLE_RATE
            silent = list(range(parity, seconds, 2))
            truth = ~np.isin(np.arange(seconds), silent)
            paused = with_pauses(speech, silent)
            audios[f"{name} pauses {parity}"] = (paused, truth)
        for snr in (10, 5, 0):
            truth = audios[f"video5 pauses {parity}"][1]
            audios[f"video5 pauses {parity}, music at {snr} dB"] = (mixed(audios[f"video5 pauses {parity}"][0], real, snr), truth)
    vad = SileroVad()
    rows = []
    for name, (samples, truth) in audios.items():
        probs = vad.speech_probability(samples)
        row = {"audio": name, "seconds": len(truth)}
        for label, rule in VAD_RULES.items():
            segments = speech_segments(probs, len(samples), rule)
            found = per_second(frames_in_segments(segments, len(truth) * round(VIDEO_FPS), VIDEO_FPS))
            row[label] = round(float((found == truth).mean()), 3)
        rows.append(row)
    return rows


if __name__ == "__main__":
    import json
    import time

    began = time.perf_counter()
    for row in vad_calibration_rows() + speaking_accuracy_rows():
        print(json.dumps(row))
    print(f"{time.perf_counter() - began:.0f} s")
