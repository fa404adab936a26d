"""Grounding-DINO open-vocabulary detection of people by text phrases (transformers'
GroundingDinoForObjectDetection from a local checkpoint folder).

The prompt is the phrases lower-cased and joined as "person. woman in a white shirt." (what
GroundingDinoProcessor builds from a label list). Post-processing follows transformers'
post_process_grounded_object_detection: a query's score is its highest token probability (sigmoid of
the logits); queries above `box_threshold` are kept (at most `max_detections`, the best), boxes
converted from normalised centre-size to corner pixels and clipped to the frame. Each kept box is
labelled with the phrase whose tokens reach the highest probability if that passes
`text_threshold` (the original's phrase decoding, per phrase instead of per token), and overlapping
boxes are reduced by non-maximum suppression.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, GroundingDinoForObjectDetection

from stages.models.image_preprocessing import Normalisation, grounding_dino_pixels, read_preprocessor_config
from stages.models.yolox import nms

NO_PHRASE = -1


@dataclass
class Detections:
    """One frame's detections: boxes [N, 4] x1, y1, x2, y2 in frame pixels, scores [N], and the index
    of each box's phrase in the prompt [N] (NO_PHRASE when none passes the text threshold)."""

    boxes: np.ndarray
    scores: np.ndarray
    phrases: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass
class TextPrompt:
    """The tokenised prompt and, per phrase, which token positions spell it [P, L]."""

    phrases: list[str]
    encoding: dict[str, torch.Tensor]
    phrase_tokens: torch.Tensor

    @classmethod
    def of(cls, phrases: list[str], tokenizer, max_tokens: int) -> TextPrompt:
        phrases = clean_phrases(phrases)
        encoding = tokenizer(". ".join(phrases) + ".", return_tensors="pt", truncation=True, max_length=max_tokens)
        ids = encoding["input_ids"][0]
        delimiter = tokenizer.convert_tokens_to_ids(".")
        # phrase p is the tokens after the p-th delimiter (or [CLS]) up to the next one
        phrase_of_token = torch.cumsum((ids == delimiter).long(), 0) - (ids == delimiter).long()
        inside = torch.ones_like(ids, dtype=torch.bool)
        inside[0] = inside[-1] = False  # [CLS], [SEP]
        inside &= ids != delimiter
        tokens = torch.stack([inside & (phrase_of_token == p) for p in range(len(phrases))])
        return cls(phrases, dict(encoding), tokens)


def clean_phrases(phrases: list[str]) -> list[str]:
    """Lower-cased phrases without the delimiters Grounding-DINO splits on, duplicates and blanks dropped."""
    cleaned = (re.sub(r"\s+", " ", re.sub(r"[.?]", " ", phrase.lower())).strip() for phrase in phrases)
    return list(dict.fromkeys(phrase for phrase in cleaned if phrase))


class GroundingDino:
    def __init__(self, folder: str | Path, device: str, dtype: torch.dtype, box_threshold: float,
                 text_threshold: float, nms_iou: float, batch_size: int, max_detections: int = 900,
                 tf32: bool = False):
        self.model = GroundingDinoForObjectDetection.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        size = read_preprocessor_config(folder).get("size", {})
        self.shortest_edge = size.get("shortest_edge", 800)
        self.longest_edge = size.get("longest_edge", 1333)
        self.norm = Normalisation.of_checkpoint(folder)
        self.device, self.dtype = device, dtype
        self.box_threshold, self.text_threshold, self.nms_iou = box_threshold, text_threshold, nms_iou
        self.batch_size, self.max_detections = batch_size, max_detections
        self.tf32 = tf32 and torch.device(device).type == "cuda"  # CPUs keep plain float32

    def prompt(self, phrases: list[str]) -> TextPrompt:
        return TextPrompt.of(phrases, self.tokenizer, self.model.config.max_text_len)

    @torch.inference_mode()
    def detect(self, frames: np.ndarray, prompt: TextPrompt) -> list[Detections]:
        """Detections in each of the same-sized RGB frames [B, H, W, 3] uint8."""
        found: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start:start + self.batch_size]
            pixels = grounding_dino_pixels(batch, self.shortest_edge, self.longest_edge, self.norm, self.device,
                                           self.dtype)
            text = {name: value.to(self.device).expand(len(batch), -1) for name, value in prompt.encoding.items()}
            with float32_matmul_precision("high" if self.tf32 else None):
                outputs = self.model(pixel_values=pixels, pixel_mask=torch.ones_like(pixels[:, 0], dtype=torch.long),
                                     **text)
            found.extend(self.postprocess(outputs.logits, outputs.pred_boxes, prompt, batch.shape[1:3]))
        return found

    def postprocess(self, logits: torch.Tensor, pred_boxes: torch.Tensor, prompt: TextPrompt,
                    frame_size: tuple[int, int]) -> list[Detections]:
        """Per image: logits [B, Q, max_text_len] and pred_boxes [B, Q, 4] (normalised cx, cy, w, h) ->
        thresholded, phrase-labelled boxes in pixels of a frame of frame_size (height, width), NMS'd."""
        probs = logits.float().sigmoid()
        return [self._frame_detections(probs[i], pred_boxes[i].float(), prompt, frame_size) for i in range(len(probs))]

    def _frame_detections(self, probs: torch.Tensor, boxes: torch.Tensor, prompt: TextPrompt,
                          frame_size: tuple[int, int]) -> Detections:
        scores = probs.max(dim=-1).values
        keep = scores > self.box_threshold
        if keep.sum() > self.max_detections:
            best = scores.masked_fill(~keep, -1.0).topk(self.max_detections).indices
            keep = torch.zeros_like(keep).index_fill_(0, best, True)
        if not keep.any():
            return Detections.empty()
        height, width = frame_size
        centre, size = boxes[keep, :2], boxes[keep, 2:]
        corners = torch.cat([centre - size / 2, centre + size / 2], dim=-1) * boxes.new_tensor([width, height] * 2)
        corners = corners.clamp(min=0).minimum(boxes.new_tensor([width, height] * 2))
        kept_probs = probs[keep][:, :prompt.phrase_tokens.shape[1]]
        # probabilities are >= 0, so the max over a 0/1 token mask is the max over the phrase's tokens
        phrase_probs = (kept_probs[:, None, :] * prompt.phrase_tokens.to(probs)[None]).max(dim=-1).values
        best_prob, best_phrase = phrase_probs.max(dim=-1)
        phrases = torch.where(best_prob > self.text_threshold, best_phrase, NO_PHRASE)
        result = Detections(corners.cpu().numpy().astype(np.float32), scores[keep].cpu().numpy(),
                            phrases.cpu().numpy().astype(np.int64))
        order = nms(result.boxes, result.scores, self.nms_iou)
        return Detections(result.boxes[order], result.scores[order], result.phrases[order])


@contextmanager
def float32_matmul_precision(precision: str | None):
    """torch's float32 matrix-product precision set to `precision` ("high": TF32 tensor cores on CUDA)
    inside the block and restored after it; None leaves it as it is. The setting is read when a
    kernel is launched, so it covers what the block queues."""
    if precision is None:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
