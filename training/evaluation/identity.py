"""identity: how well generated videos keep each reference person's look (CLIP-I, DINO-I, face similarity)
and follow the caption (CLIP-T), as InterActHuman's evaluation reports them.

Every value is read on `frames` frames (5) spread evenly over the generated video; all similarities are
plain cosines of L2-normalised embeddings, in [-1, 1] (not scaled by 100 as some papers print them).

- clip_i, dino_i (subject similarity): Grounding-DINO (the masks stage's detector, prompt "person")
  finds the people in each frame; each box's pixels are cut out (boxes whose shorter side is under
  `min_subject_side` px are ignored) and embedded, as is each identity's full-body reference
  (ref_<i>.png, on its white background). CLIP-I embeds with CLIP's vision tower and projection
  (CLIPModel, `clip_path`), DINO-I with DINOv2's CLS token after its final layer norm (Dinov2Model,
  `dino_path`). Both use their checkpoint's preprocessor_config.json through ClipPreprocess: shorter
  side resized with PIL bicubic (224 for CLIP, 256 for DINOv2), centre crop 224, checkpoint mean and
  std (CLIP's, ImageNet's): CLIPImageProcessor's steps, which are also DINOv2's BitImageProcessor's.
  The centre crop trims the ends of tall person crops and references alike, as CLIP-I is conventionally
  computed.
- face_similarity: YuNet (`face_detector_path`; a fixed-size file runs in OpenCV, a dynamic one in
  ONNX Runtime) finds faces with 5 landmarks in each frame; each face is aligned to insightface's
  112x112 ArcFace template by the least-squares similarity transform of its landmarks (Umeyama, what
  insightface's norm_crop estimates) and embedded by an ArcFace ONNX model (`arcface_path`, e.g.
  insightface's w600k_r50.onnx: input [N, 3, 112, 112] RGB as (x - 127.5) / 127.5, output 512-d).
  Models that normalise inside their graph (insightface's older MXNet conversions) are not supported.
  The identity's face reference (face_<i>.png, a head crop centred on the face) is detected and aligned
  the same way, taking the face nearest the crop's centre; when YuNet finds no face in it, the whole
  head crop resized to 112x112 is embedded instead (a warning is logged): the references stage makes
  the crop 1.8 face sizes wide, so the face then fills about the share of the picture the template
  gives it, though unaligned.
- clip_t: mean over the frames of the cosine between CLIP's frame embedding and the embedding of the
  sample's caption (CLIP's tokenizer from `clip_path`, truncated to the text tower's 77 positions).

Matching identities to subjects: each identity takes, in every frame, the detected subject (or face)
most similar to its reference; these per-frame best matches are averaged over the frames that have any
subject, then over the identities with a reference. A generated video carries no identity labels we can
trust: detections come in no particular order, and the sampler's mask trace is the model's own
prediction, so scoring through it would let a model that places identities wrongly grade itself. The
best match asks "is this person rendered faithfully somewhere in the frame", the question CLIP-I and
DINO-I answer in subject-driven generation. Matches are not one-to-one: two references may pick the
same subject, so a video that drops one of two similar-looking people loses little here.

Per video: clip_i, dino_i, face_similarity (NaN when no identity has a reference or no frame has a
subject or face) and clip_t (NaN without a caption). Summary: each value's mean over the videos that
have it. A value whose models are not configured is left out and listed in `skipped` with the reason;
build raises MetricUnavailable only when none of the four can run. A configured model that is not what
it should be (a CLIP or DINOv2 folder lacking weights of its architecture, an ArcFace file without a
112x112 input) is a ValueError, not a skip: transformers would otherwise fill missing weights randomly.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort
import torch

from stages.models.aesthetic_head import ClipPreprocess
from stages.models.grounding import GroundingDino
from stages.models.yunet import FaceDetections, YuNetOnnx, YuNetOpenCV, fixed_input_size
from training.data import ClipSample
from training.evaluation.common import (GeneratedVideo, MeanOfScores, MetricSettings, MetricUnavailable, require_path,
                                        sample_frame_indices)

log = logging.getLogger(__name__)

METRIC = "identity"
# each value and the model paths it needs, its own model first (the first missing one is the reason)
REQUIRED_PATHS = {
    "clip_i": ("clip_path", "grounding_path"),
    "dino_i": ("dino_path", "grounding_path"),
    "face_similarity": ("arcface_path", "face_detector_path"),
    "clip_t": ("clip_path",),
}
PERSON = "person"  # the masks stage's query for people
GROUNDING_TEXT_THRESHOLD = 0.25  # the masks stage's; it only labels boxes with the phrase, not kept here
GROUNDING_NMS_IOU = 0.5  # the masks stage's
FACE_NMS_IOU = 0.3  # the faces stage's
ARCFACE_SIZE = 112
# insightface's arcface_dst: eye (the one on the image's left first), eye, nose tip, mouth corners, in
# the 112x112 crop. YuNet lists its landmarks in this order (right eye = the image's left one).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
ARCFACE_MEAN = ARCFACE_STD = 127.5


class IdentitySettings(MetricSettings):
    """The section's model paths (see REQUIRED_PATHS for which value needs which) and tunables."""

    grounding_path: str | None = None
    clip_path: str | None = None
    dino_path: str | None = None
    arcface_path: str | None = None
    face_detector_path: str | None = None
    frames: int = 5  # frames scored per video, spread evenly over it
    box_threshold: float = 0.35  # Grounding-DINO keeps person boxes scoring above this (the masks stage's)
    max_subjects: int = 10  # most person boxes per frame (the best), before non-maximum suppression
    min_subject_side: int = 16  # person boxes with a shorter side (px) are ignored: too small to embed
    face_score_threshold: float = 0.5  # YuNet keeps faces scoring at least this (its own default)


# ---------------------------------------------------------------- embedders


class ImageEmbedder(Protocol):
    def images(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 images [H, W, 3] (any sizes) -> unit-length embeddings [N, D] float32."""


class ClipEmbedder:
    """CLIPModel from a local checkpoint: images through the vision tower and visual projection,
    texts through the text tower and text projection."""

    def __init__(self, folder: str, device: str):
        from transformers import AutoTokenizer, CLIPModel

        self.model = load_complete(CLIPModel, folder, device)
        self.preprocess = ClipPreprocess.from_file(Path(folder) / "preprocessor_config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.device = device

    @torch.inference_mode()
    def images(self, images: list[np.ndarray]) -> np.ndarray:
        pixels = pixel_batch(self.preprocess, images, self.device)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return unit_rows(self.model.visual_projection(pooled))

    @torch.inference_mode()
    def texts(self, texts: list[str]) -> np.ndarray:
        """Unit-length text embeddings [N, D]; each text truncated to the text tower's positions (77)."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings).to(self.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        return unit_rows(self.model.text_projection(pooled))


class DinoEmbedder:
    """Dinov2Model from a local checkpoint: the CLS token of the last hidden state (after the final layer
    norm), DINO-I's image descriptor."""

    def __init__(self, folder: str, device: str):
        from transformers import Dinov2Model

        self.model = load_complete(Dinov2Model, folder, device)
        # BitImageProcessor (DINOv2's) runs CLIPImageProcessor's steps: shorter side, centre crop, mean/std
        self.preprocess = ClipPreprocess.from_file(Path(folder) / "preprocessor_config.json")
        self.device = device

    @torch.inference_mode()
    def images(self, images: list[np.ndarray]) -> np.ndarray:
        hidden = self.model(pixel_values=pixel_batch(self.preprocess, images, self.device)).last_hidden_state
        return unit_rows(hidden[:, 0])


def load_complete(model_class: type, folder: str, device: str) -> torch.nn.Module:
    """model_class.from_pretrained(folder) in eval mode on `device`, refusing a checkpoint that lacks some
    of the model's weights: transformers would fill them with random values and only print a report
    (a DINO v1 ViT folder loaded as DINOv2 would give random embeddings and a plausible-looking score)."""
    model, loading = model_class.from_pretrained(folder, output_loading_info=True)
    missing = sorted(loading["missing_keys"]) + sorted(str(key) for key in loading["mismatched_keys"])
    if missing:
        raise ValueError(f"{METRIC}: {folder} is not a {model_class.__name__} checkpoint: {len(missing)} weights "
                         f"missing or misshapen ({', '.join(missing[:3])}, ...)")
    return model.eval().to(device)


def pixel_batch(preprocess: ClipPreprocess, images: list[np.ndarray], device: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(image) for image in images])).to(device)


def unit_rows(embeddings: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu().numpy()


# ---------------------------------------------------------------- subjects (CLIP-I, DINO-I)


class SubjectFinder:
    """Grounding-DINO "person" boxes on frames, cut out of them."""

    def __init__(self, folder: str, device: str, settings: IdentitySettings):
        # float32: the masks stage's choice for Grounding-DINO (bfloat16 deformable attention is imprecise)
        self.detector = GroundingDino(folder, device, torch.float32, settings.box_threshold,
                                      GROUNDING_TEXT_THRESHOLD, GROUNDING_NMS_IOU, batch_size=settings.frames,
                                      max_detections=settings.max_subjects)
        self.prompt = self.detector.prompt([PERSON])
        self.min_side = settings.min_subject_side

    def crops(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        """Per frame of [T, H, W, 3] RGB uint8, the crops of the people found in it."""
        return [subject_crops(frame, found.boxes, self.min_side)
                for frame, found in zip(frames, self.detector.detect(frames, self.prompt))]


def subject_crops(frame: np.ndarray, boxes: np.ndarray, min_side: int) -> list[np.ndarray]:
    """The frame's pixels inside each box (x1, y1, x2, y2, rounded outwards to whole pixels and clipped
    to the frame), leaving out boxes whose shorter side is under min_side pixels."""
    height, width = frame.shape[:2]
    crops = []
    for x1, y1, x2, y2 in boxes:
        left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
        right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
        if min(right - left, bottom - top) >= min_side:
            crops.append(frame[top:bottom, left:right])
    return crops


def subject_similarity(embedder: ImageEmbedder, references: list[np.ndarray | None],
                       crops: list[list[np.ndarray]]) -> float:
    """CLIP-I / DINO-I of one video: the references (None: the identity has none) against the subjects
    cut out of each frame."""
    present = [reference for reference in references if reference is not None]
    candidates = [crop for frame_crops in crops for crop in frame_crops]
    if not present or not candidates:
        return float("nan")
    embeddings = embedder.images(present + candidates)
    return best_match_similarity(embeddings[:len(present)],
                                 split_per_frame(embeddings[len(present):], [len(frame) for frame in crops]))


def split_per_frame(embeddings: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Rows [sum(counts), D] -> one [count, D] block per frame, in order."""
    return np.split(embeddings, np.cumsum(counts)[:-1])


def best_match_similarity(references: np.ndarray, per_frame: list[np.ndarray]) -> float:
    """Mean over the identities (reference rows [I, D]) of the mean over the frames with candidates (per
    frame [N_f, D]) of the identity's highest cosine to them; all rows unit length. NaN without any."""
    frames = [candidates for candidates in per_frame if len(candidates)]
    if not len(references) or not frames:
        return float("nan")
    best = np.stack([(candidates @ references.T).max(axis=0) for candidates in frames])  # [F, I]
    return float(np.clip(best, -1.0, 1.0).mean(axis=0).mean())


# ---------------------------------------------------------------- faces


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation taking points source [K, 2] closest to target
    [K, 2] in least squares (Umeyama 1991, without reflection; skimage's SimilarityTransform.estimate,
    which insightface's norm_crop uses)."""
    source, target = source.astype(np.float64), target.astype(np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, 1.0 if np.linalg.det(covariance) >= 0 else -1.0])  # no mirror image
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / source_centred.var(axis=0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of the face with 5 landmarks [5, 2] (YuNet's order) in `image`
    (bilinear, black outside the image, as insightface's norm_crop)."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    return cv2.warpAffine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def arcface_pixels(face_rgb: np.ndarray) -> np.ndarray:
    """[112, 112, 3] RGB uint8 -> [3, 112, 112] float32 (x - 127.5) / 127.5 in RGB order: insightface
    reads BGR images and swaps them to RGB in cv2.dnn.blobFromImages(..., swapRB=True)."""
    return ((face_rgb.astype(np.float32) - ARCFACE_MEAN) / ARCFACE_STD).transpose(2, 0, 1)


class ArcFace:
    """An ArcFace ONNX model: aligned 112x112 RGB faces -> unit-length embeddings."""

    def __init__(self, model_path: str, device: str):
        self.session = ort.InferenceSession(model_path, providers=onnx_providers(device))
        self.input = self.session.get_inputs()[0]
        if list(self.input.shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise ValueError(f"{METRIC}: arcface_path={model_path!r} takes input {self.input.shape}, "
                             f"not [N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}]")
        batch = self.input.shape[0]
        self.batch_size = batch if isinstance(batch, int) else None  # None: any batch size

    def embed(self, faces: list[np.ndarray]) -> np.ndarray:
        blob = np.stack([arcface_pixels(face) for face in faces])
        step = self.batch_size or len(blob)
        outputs = [self.session.run(None, {self.input.name: blob[start:start + step]})[0]
                   for start in range(0, len(blob), step)]
        embeddings = np.concatenate(outputs).reshape(len(blob), -1).astype(np.float32)
        return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)


def onnx_providers(device: str) -> list:
    """CUDA on the torch device's GPU when asked for and ONNX Runtime has it, else the CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def yunet(model_path: str, score_threshold: float) -> YuNetOnnx | YuNetOpenCV:
    """A fixed-size YuNet file in OpenCV (frames letterboxed to its input), a dynamic one in ONNX Runtime
    at the frame's own size (OpenCV cannot load those)."""
    size = fixed_input_size(model_path)
    if size is None:
        return YuNetOnnx(model_path, score_threshold, FACE_NMS_IOU)
    return YuNetOpenCV(model_path, size, score_threshold, FACE_NMS_IOU)


class FaceSimilarity:
    """ArcFace cosine between each identity's face reference and the faces found in the frames."""

    def __init__(self, detector: YuNetOnnx | YuNetOpenCV, arcface: ArcFace):
        self.detector = detector
        self.arcface = arcface

    def __call__(self, frames: np.ndarray, sample: ClipSample) -> float:
        references = [self.reference_face(head, sample.key, index)[0]
                      for index, head in enumerate(sample.faces) if head is not None]
        per_frame = [[align_face(frame, landmarks) for landmarks in found.landmarks]
                     for frame, found in zip(frames, self.detector.detect(frames))]
        faces = [face for frame_faces in per_frame for face in frame_faces]
        if not references or not faces:
            return float("nan")
        embeddings = self.arcface.embed(references + faces)
        return best_match_similarity(embeddings[:len(references)],
                                     split_per_frame(embeddings[len(references):], [len(f) for f in per_frame]))

    def reference_face(self, head: np.ndarray, key: str, identity: int) -> tuple[np.ndarray, bool]:
        """The aligned face of a head crop, and whether one was found (else the crop resized to 112x112)."""
        found = self.detector.detect(head[None])[0]
        if not len(found.scores):
            log.warning("%s: no face found in %s's face_%d.png; embedding the whole head crop resized to %dx%d",
                        METRIC, key, identity, ARCFACE_SIZE, ARCFACE_SIZE)
            return cv2.resize(head, (ARCFACE_SIZE, ARCFACE_SIZE), interpolation=cv2.INTER_AREA), False
        return align_face(head, found.landmarks[central_face(found, head.shape[:2])]), True


def central_face(found: FaceDetections, size: tuple[int, int]) -> int:
    """Index of the face whose box centre is nearest the image's centre: the head crop is centred on its
    identity's face, so a neighbour's face reaching into it is off-centre."""
    centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
    return int(np.linalg.norm(centres - np.array(size[::-1]) / 2, axis=1).argmin())


# ---------------------------------------------------------------- the metric


def text_similarity(clip: ClipEmbedder, frames: np.ndarray, caption: str) -> float:
    """CLIP-T: mean over the frames of cosine(frame embedding, caption embedding); NaN without a caption."""
    if not caption.strip():
        return float("nan")
    cosines = clip.images(list(frames)) @ clip.texts([caption])[0]
    return float(np.clip(cosines, -1.0, 1.0).mean())


class IdentityMetric:
    """The configured ones of clip_i, dino_i, face_similarity and clip_t, per video and averaged."""

    def __init__(self, settings: IdentitySettings, subjects: SubjectFinder | None,
                 subject_embedders: dict[str, ImageEmbedder], faces: FaceSimilarity | None,
                 clip_text: ClipEmbedder | None, skipped: dict[str, str]):
        self.settings = settings
        self.subjects = subjects
        self.subject_embedders = subject_embedders  # "clip_i" / "dino_i" -> embedder
        self.faces = faces
        self.clip_text = clip_text
        self.skipped = skipped
        self.means = MeanOfScores()

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        frames = generated.frames[sample_frame_indices(len(generated.frames), self.settings.frames)]
        scores: dict[str, float] = {}
        if self.subject_embedders:
            crops = self.subjects.crops(frames)  # once for CLIP-I and DINO-I
            for name, embedder in self.subject_embedders.items():
                scores[name] = subject_similarity(embedder, sample.refs, crops)
        if self.faces is not None:
            scores["face_similarity"] = self.faces(frames, sample)
        if self.clip_text is not None:
            scores["clip_t"] = text_similarity(self.clip_text, frames, sample.caption)
        return self.means.add(scores)

    def summary(self) -> dict[str, float]:
        return self.means.means()


def unavailable_reason(settings: IdentitySettings, name: str) -> str | None:
    """Why value `name` cannot run (its first missing model path), or None when it can."""
    try:
        for key in REQUIRED_PATHS[name]:
            require_path(settings, key, name)
    except MetricUnavailable as reason:
        return str(reason)
    return None


def build(settings: IdentitySettings, device: str) -> IdentityMetric:
    """The metric from its settings, with every value whose model paths are set; each model is loaded
    once (CLIP serves clip_i and clip_t, Grounding-DINO clip_i and dino_i)."""
    skipped = {name: reason for name in REQUIRED_PATHS if (reason := unavailable_reason(settings, name))}
    if len(skipped) == len(REQUIRED_PATHS):
        raise MetricUnavailable("; ".join(skipped.values()))
    runs = [name for name in REQUIRED_PATHS if name not in skipped]
    clip = ClipEmbedder(settings.clip_path, device) if {"clip_i", "clip_t"} & set(runs) else None
    subject_embedders: dict[str, ImageEmbedder] = {}
    if "clip_i" in runs:
        subject_embedders["clip_i"] = clip
    if "dino_i" in runs:
        subject_embedders["dino_i"] = DinoEmbedder(settings.dino_path, device)
    subjects = SubjectFinder(settings.grounding_path, device, settings) if subject_embedders else None
    faces = None
    if "face_similarity" in runs:
        faces = FaceSimilarity(yunet(settings.face_detector_path, settings.face_score_threshold),
                               ArcFace(settings.arcface_path, device))
    return IdentityMetric(settings, subjects, subject_embedders, faces, clip if "clip_t" in runs else None, skipped)
