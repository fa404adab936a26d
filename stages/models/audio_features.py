"""Audio inputs of the audio-visual speaker models (Light-ASD, SyncNet): MFCC from 16 kHz PCM
aligned to 25 fps face tracks. (Their face crops: stages/models/face_tracking.py.)

Both models take 13-coefficient MFCC at 100 fps (4 rows per video frame) computed by
python_speech_features with its defaults (nfilt 26, nfft 512, preemph 0.97, ceplifter 22, c0
replaced by the log frame energy), unnormalised.
"""
from __future__ import annotations

import io

import numpy as np
import python_speech_features
from scipy.io import wavfile

SAMPLE_RATE = 16000
VIDEO_FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS  # 640
MFCC_WINDOW = 400  # 25 ms; with a 10 ms step, 4 rows per video frame
MFCC_STEP = 160
# 4n MFCC rows need 160*(4n-1) + 400 samples, that is n frames plus this tail.
MFCC_TAIL = MFCC_WINDOW - MFCC_STEP


def read_wav16k(data: bytes) -> np.ndarray:
    """int16 samples of a 16 kHz mono 16-bit PCM WAV; ValueError for any other format."""
    rate, samples = wavfile.read(io.BytesIO(data))
    if rate != SAMPLE_RATE or samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"expected 16 kHz mono int16 WAV, got {rate} Hz {samples.dtype} "
                         f"with shape {samples.shape}")
    return samples


def mfcc_100fps(samples: np.ndarray) -> np.ndarray:
    """[rows, 13] float32 MFCC of int16 16 kHz samples; row i covers samples [160i, 160i+400)."""
    if len(samples) < MFCC_WINDOW:
        return np.zeros((0, 13), dtype=np.float32)
    return python_speech_features.mfcc(samples, SAMPLE_RATE, numcep=13, winlen=0.025,
                                       winstep=0.010).astype(np.float32)


def track_mfcc(samples: np.ndarray, first_frame: int, n_frames: int) -> np.ndarray:
    """[4 * n_frames, 13] MFCC of video frames [first_frame, first_frame + n_frames) at 25 fps.

    The audio is cut at the track's first frame (as the originals cut a wav per track) with the
    240-sample tail that makes exactly 4 rows per frame; audio missing at the clip's end is
    taken as silence (zeros).
    """
    start = first_frame * SAMPLES_PER_FRAME
    needed = n_frames * SAMPLES_PER_FRAME + MFCC_TAIL
    cut = samples[start:start + needed]
    if len(cut) < needed:
        cut = np.concatenate([cut, np.zeros(needed - len(cut), dtype=samples.dtype)])
    return mfcc_100fps(cut)[:4 * n_frames]
