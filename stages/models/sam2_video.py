"""SAM2 video tracking of box-prompted objects (transformers' Sam2VideoModel from a local checkpoint).

One pass over the frames, in order, for one clip or several at once. The image encoder runs on
`batch_size` frames of a clip at once. The per-frame step (memory attention, mask decoder, memory
encoder) runs on frame t of every clip together, with all their objects as one batch: transformers'
Sam2VideoModel.forward steps one object at a time from Python, which leaves the GPU idle between
small kernels, so the step here is built from the model's own modules and memory-gathering code, the
objects as the batch dimension, as facebookresearch/sam2 batches the objects of a frame. Objects whose
memories differ in length (one found later than the others) attend in separate batches. On a GPU
(cuda_graphs), a tracking step whose objects share one memory layout (the usual case) is replayed from
a CUDA graph captured the first time that (objects, memory tokens, pointer tokens) comes: the few
hundred kernels of memory attention, mask decoder and memory encoder in one launch. The same layouts
recur in every clip (the memory fills up over the first max_object_pointers_in_encoder frames), so a
worker captures a few dozen graphs on its first clips and replays them after.

On a frame with detections, the tracked objects are stepped first; a detection whose box overlaps no
tracked object's mask by `new_object_iou` starts a new object, box-prompted on that frame (a
conditioning frame, as a user's box would be), and the new objects of all clips take that step
together. Each object's session keeps only what SAM2 reads again: its conditioning frame and its last
max(num_maskmem, max_object_pointers_in_encoder) tracked frames.

Outputs per tracked frame: each object's mask logits resized to the requested output size, and its
presence probability, the sigmoid of SAM2's object score logit (SAM2 itself treats a logit above 0,
probability above 0.5, as the object being visible).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE, Sam2VideoInferenceSession, get_1d_sine_pe

from stages.models.image_preprocessing import Normalisation, sam2_pixels
from stages.models.boxes import box_iou

ABSENT_LOGIT = -20.0  # mask logit of an object on frames before it was found (sigmoid ~ 2e-9)
BOX_LABELS = (2, 3)  # SAM's point labels of a box's top-left and bottom-right corners
NEW_OBJECT = -1


@dataclass
class TrackedObjects:
    """logits [O, T, h, w] float16 mask logits at the output size (> 0 inside); presence [O, T]
    float32 (0 before the object was found); first_frame [O] the frame each object was found on;
    detection_objects: per frame with detections, the object each detection became or continued
    (NEW_OBJECT when it was dropped at the max_objects limit)."""

    logits: np.ndarray
    presence: np.ndarray
    first_frame: np.ndarray
    detection_objects: dict[int, np.ndarray]


@dataclass
class ClipToTrack:
    """RGB frames [T, H, W, 3] uint8, the boxes [N, 4] (frame pixels) found on some of them, and the
    (h, w) of the mask logits to return."""

    frames: np.ndarray
    boxes_at: dict[int, np.ndarray]
    out_size: tuple[int, int]


class Sam2VideoTracker:
    def __init__(self, folder: str | Path, device: str, dtype: torch.dtype, batch_size: int,
                 new_object_iou: float, max_objects: int, cuda_graphs: bool = False):
        self.model = Sam2VideoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        config = self.model.config
        self.image_size = config.image_size
        self.memory_frames = max(config.num_maskmem, config.max_object_pointers_in_encoder)
        with torch.inference_mode():
            self.image_positions = self.model.get_image_wide_positional_embeddings()  # the same on every step
        self.norm = Normalisation.of_checkpoint(folder)
        self.device, self.dtype = device, dtype
        self.batch_size, self.new_object_iou, self.max_objects = batch_size, new_object_iou, max_objects
        # CUDA graphs of the tracking step, one per (objects, memory tokens, pointer tokens), sharing one
        # memory pool: each replay's outputs are copied out before the next replay
        on_gpu = torch.device(device).type == "cuda"
        self.graphs: dict[tuple[int, int, int], _CudaGraph] | None = {} if cuda_graphs and on_gpu else None
        self.graph_pool = torch.cuda.graph_pool_handle() if self.graphs is not None else None
        # modules whose outputs come from a cache (SAM2's sine position encodings, lru_cache(maxsize=1)
        # by shape): a graph keeps what they returned while capturing, which a later call with another
        # shape would evict and free under it
        self.cached_modules = [module for module in self.model.modules()
                               if type(module).__name__.endswith("PositionEmbeddingSine")]

    def track(self, frames: np.ndarray, boxes_at: dict[int, np.ndarray], out_size: tuple[int, int]) -> TrackedObjects:
        """Track through RGB frames [T, H, W, 3] uint8 the objects that the boxes [N, 4] (frame pixels)
        given for some frame indices find."""
        return self.track_clips([ClipToTrack(frames, boxes_at, out_size)])[0]

    @torch.inference_mode()
    def track_clips(self, clips: list[ClipToTrack]) -> list[TrackedObjects]:
        """Track each clip's objects, frame t of every clip in the same batched steps."""
        runs = [_TrackingRun(self, clip) for clip in clips]
        for index in range(max((len(clip.frames) for clip in clips), default=0)):
            active = [run for run in runs if index < len(run.clip.frames)]
            for run in active:
                run.encode_if_due(index)
            tracked = [_Entry(run, obj) for run in active for obj in range(run.n_objects)]
            if tracked:
                _record(index, tracked, *self._step(index, tracked))
            started = [(_Entry(run, obj), corners) for run in active for obj, corners in run.start_objects(index)]
            if started:
                prompts = torch.cat([corners for _, corners in started]).to(self.device)
                entries = [entry for entry, _ in started]
                _record(index, entries, *self._step(index, entries, prompts))
            for run in active:
                run.prune(index)
        return [run.result() for run in runs]

    def _step(self, index: int, entries: list[_Entry],
              prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One SAM2 step on frame `index` for every entry's object at once: tracking, conditioned on
        each object's memory, or (prompts: box corners [B, 1, 2, 2] in model pixels) the first step of
        new objects. Stores what later steps read in the sessions; returns low-resolution mask logits
        [B, 1, h, w] and object score logits [B]."""
        model = self.model
        levels = [torch.cat(level, dim=1) for level in zip(*(entry.run.features(index) for entry in entries))]
        current, current_positions = levels[-2], levels[-1]
        high_res_features = [level.permute(1, 2, 0).view(level.shape[1], level.shape[2], *size)
                             for level, size in zip(levels[:-2], model.backbone_feature_sizes[:-1])]
        if prompts is None:
            masks, pointers, scores, memories, memory_positions = self._track(
                index, entries, current, current_positions, high_res_features)
        else:
            height, width = model.backbone_feature_sizes[-1]
            image_features = (current + model.no_memory_embedding).permute(1, 2, 0).view(
                len(entries), model.hidden_dim, height, width)
            masks, high_res_masks, pointers, scores = self._decode(image_features, high_res_features, prompts)
            memories, memory_positions = model._encode_new_memory(current, high_res_masks, scores,
                                                                   is_mask_from_pts=True)
        kind = "non_cond_frame_outputs" if prompts is None else "cond_frame_outputs"
        for i, entry in enumerate(entries):
            entry.run.session.output_dict_per_obj[entry.obj][kind][index] = {
                "object_pointer": pointers[i:i + 1], "maskmem_features": memories[:, i:i + 1],
                "maskmem_pos_enc": memory_positions[:, i:i + 1]}
        return masks, scores.reshape(-1)

    def _track(self, index: int, entries: list[_Entry], current: torch.Tensor, positions: torch.Tensor,
               high_res_features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """A tracking step conditioned on each object's memory: mask logits, object pointers, object
        score logits and the new memories. When every object's memory has the same layout (the usual
        case) the step is one call of _tracking_step, replayed from a CUDA graph when cuda_graphs is on."""
        memories = self._memories(index, entries)
        layouts = {(len(tokens), pointer_tokens) for tokens, _, pointer_tokens in memories}
        if len(layouts) > 1:
            image_features = self._memory_conditioned(memories, current, positions)
            masks, high_res_masks, pointers, scores = self._decode(image_features, high_res_features, None)
            return (masks, pointers, scores,
                    *self.model._encode_new_memory(current, high_res_masks, scores, is_mask_from_pts=False))
        ((length, pointer_tokens),) = layouts
        inputs = (current, positions, *high_res_features, torch.cat([tokens for tokens, _, _ in memories], dim=1),
                  torch.cat([memory_positions for _, memory_positions, _ in memories], dim=1))
        if self.graphs is None:
            return self._tracking_step(pointer_tokens, *inputs)
        key = (len(entries), length, pointer_tokens)
        if key not in self.graphs:
            try:
                self.graphs[key] = _CudaGraph(lambda *tensors: self._tracking_step(pointer_tokens, *tensors),
                                              inputs, self.graph_pool, self.cached_modules)
            except RuntimeError as error:  # a capture this torch or transformers cannot do: launch as before
                warnings.warn(f"SAM2's tracking step runs without CUDA graphs: capturing one failed ({error})")
                self.graphs = None
                return self._tracking_step(pointer_tokens, *inputs)
        return self.graphs[key](*inputs)

    def _tracking_step(self, pointer_tokens: int, current: torch.Tensor, positions: torch.Tensor,
                       *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Memory attention (memory [S, B, C_mem], its last pointer_tokens tokens object pointers),
        mask decoder and memory encoder for a batch of objects: tensors in, tensors out, nothing read
        or written elsewhere, so that a CUDA graph can replay it."""
        model = self.model
        *high_res_features, memory, memory_positions = rest
        height, width = model.backbone_feature_sizes[-1]
        attended = model.memory_attention(current_vision_features=current,
                                          current_vision_position_embeddings=positions, memory=memory,
                                          memory_posision_embeddings=memory_positions,
                                          num_object_pointer_tokens=pointer_tokens)
        image_features = attended[0].transpose(1, 2).reshape(current.shape[1], model.hidden_dim, height, width)
        masks, high_res_masks, pointers, scores = self._decode(image_features, list(high_res_features), None)
        return (masks, pointers, scores,
                *model._encode_new_memory(current, high_res_masks, scores, is_mask_from_pts=False))

    def _memory_conditioned(self, memories: list[tuple[torch.Tensor, torch.Tensor, int]], current: torch.Tensor,
                            positions: torch.Tensor) -> torch.Tensor:
        """Top-level features [B, C, H, W] after memory attention to each object's memory (from
        _memories); objects whose memories have the same layout attend as one batch."""
        model = self.model
        layouts: dict[tuple[int, int], list[int]] = {}
        for i, (tokens, _, pointer_tokens) in enumerate(memories):
            layouts.setdefault((len(tokens), pointer_tokens), []).append(i)
        height, width = model.backbone_feature_sizes[-1]
        conditioned: list[torch.Tensor | None] = [None] * len(memories)
        for (_, pointer_tokens), members in layouts.items():
            # slices rather than an index list, whose copy to the GPU would wait for the GPU
            attended = model.memory_attention(
                current_vision_features=_batch_of(current, members),
                current_vision_position_embeddings=_batch_of(positions, members),
                memory=torch.cat([memories[i][0] for i in members], dim=1),
                memory_posision_embeddings=torch.cat([memories[i][1] for i in members], dim=1),
                num_object_pointer_tokens=pointer_tokens)
            attended = attended[0].transpose(1, 2).reshape(len(members), model.hidden_dim, height, width)
            for i, features in zip(members, attended):
                conditioned[i] = features
        return torch.stack(conditioned)

    def _memories(self, index: int, entries: list[_Entry]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Each entry's memory for frame `index`, as Sam2VideoModel._prepare_memory_conditioned_features
        gathers it when streaming: tokens [S, 1, C_mem], their position encodings, and how many of
        them (the last) are object-pointer tokens."""
        model, device = self.model, self.model.device
        gathered = []
        for entry in entries:
            session = entry.run.session
            tokens, positions = model._build_memory_attention_inputs(
                model._gather_memory_frame_outputs(session, entry.obj, index), device)
            offsets, pointers, _ = model._get_object_pointers(session, entry.obj, index, None, device,
                                                              streaming=True)
            gathered.append((tokens, positions, offsets, pointers))
        pointer_positions = self._pointer_positions([offsets for _, _, offsets, _ in gathered])
        splits = model.hidden_dim // model.mem_dim  # a pointer is split into memory-sized tokens
        memories = []
        for (tokens, positions, _, pointers), pointer_position in zip(gathered, pointer_positions):
            if pointers:
                split = torch.stack(pointers).reshape(-1, 1, splits, model.mem_dim)
                tokens.append(split.permute(0, 2, 1, 3).flatten(0, 1))
                positions.append(pointer_position)
            memories.append((torch.cat(tokens).to(self.dtype), torch.cat(positions), len(pointers) * splits))
        return memories

    def _pointer_positions(self, offsets: list[list[int]]) -> list[torch.Tensor]:
        """The temporal position encodings [n * splits, 1, C_mem] of each entry's object pointers
        (frames away), as Sam2VideoModel._process_object_pointers computes them, for all entries at
        once and without its torch.tensor(..., device=), which waits for every queued kernel."""
        model = self.model
        steps = torch.tensor([step for entry in offsets for step in entry], dtype=torch.float32,
                             pin_memory=model.device.type == "cuda")
        steps = steps.to(model.device, non_blocking=True) / float(model.config.max_object_pointers_in_encoder - 1)
        if model.config.enable_temporal_pos_encoding_for_object_pointers:
            encoded = get_1d_sine_pe(steps, dim=model.hidden_dim).to(self.dtype)
            encoded = model.temporal_positional_encoding_projection_layer(encoded)
        else:
            encoded = steps.new_zeros(len(steps), model.mem_dim, dtype=self.dtype)
        splits = model.hidden_dim // model.mem_dim
        parts = encoded.split([len(entry) for entry in offsets])
        return [part[:, None].repeat_interleave(splits, dim=0) for part in parts]

    def _decode(self, image_features: torch.Tensor, high_res_features: list[torch.Tensor],
                prompts: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """SAM's prompt encoder and mask decoder on a batch of objects, as Sam2VideoModel's
        _single_frame_forward runs them on one (whose pick of the best multimask output only holds
        for a batch of one): mask logits [B, 1, h, w] and at the model's image size, object pointers
        [B, 1, C], object score logits [B, 1, 1]."""
        model = self.model
        batch, device = len(image_features), image_features.device
        if prompts is None:  # no prompt: one padding point, as SAM2 tracks
            points = image_features.new_zeros(batch, 1, 1, 2)
            labels = torch.full((batch, 1, 1), -1, dtype=torch.int32, device=device)
        else:
            points = prompts
            labels = torch.tensor(BOX_LABELS, dtype=torch.int32, device=device).expand(batch, 1, 2)
        multimask = model._use_multimask(prompts is not None, None if prompts is None else {"point_labels": labels})
        sparse, dense = model.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None,
                                             input_masks=None)
        masks, iou, tokens, scores = model.mask_decoder(
            image_embeddings=image_features, image_positional_embeddings=self.image_positions.repeat(batch, 1, 1, 1),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            high_resolution_features=high_res_features)
        appearing = scores > 0
        masks = torch.where(appearing[:, None, None], masks, NO_OBJ_SCORE)
        rows = torch.arange(batch, device=device)
        best = iou[:, 0].argmax(dim=-1)  # a single output's index is 0
        masks = masks[rows, 0, best][:, None]
        high_res_masks = F.interpolate(masks.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                       align_corners=False).to(masks.dtype)
        pointers = model.object_pointer_proj(tokens[rows, 0, best][:, None])
        visible = appearing.to(pointers.dtype)
        pointers = visible * pointers + (1 - visible) * model.no_object_pointer
        return masks, high_res_masks, pointers, scores


class _CudaGraph:
    """fn(*tensors) -> tuple of tensors captured in a CUDA graph on copies of the first inputs (after
    two warm-up calls on a side stream, as torch.cuda.make_graphed_callables does); a call copies its
    inputs into the captured ones, replays the graph and returns copies of the outputs."""

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...], pool, cached_modules: list[torch.nn.Module]):
        self.inputs = tuple(tensor.clone() for tensor in inputs)
        self.kept: list = []  # outputs of cached_modules read by the graph
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        hooks = [module.register_forward_hook(lambda _, __, output: self.kept.append(output))
                 for module in cached_modules]
        try:
            with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
                self.outputs = fn(*self.inputs)
        finally:
            for hook in hooks:
                hook.remove()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for captured, tensor in zip(self.inputs, inputs):
            captured.copy_(tensor)
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)


@dataclass(frozen=True)
class _Entry:
    run: _TrackingRun
    obj: int


def _batch_of(features: torch.Tensor, members: list[int]) -> torch.Tensor:
    """Features [L, B, C] of the batch entries `members`."""
    if len(members) == features.shape[1]:
        return features
    return torch.cat([features[:, i:i + 1] for i in members], dim=1)


def _record(index: int, entries: list[_Entry], masks: torch.Tensor, scores: torch.Tensor) -> None:
    """Hand each run the outputs of its entries (consecutive in `entries`)."""
    start = 0
    for run, group in groupby(entries, key=lambda entry: entry.run):
        end = start + len(list(group))
        run.record(index, masks[start:end], scores[start:end])
        start = end


@dataclass
class _FrameOutput:
    logits: torch.Tensor  # [O_t, h, w] float16 on the device, objects 0..O_t-1 known at that frame
    presence: torch.Tensor  # [O_t]

    def extended(self, more: _FrameOutput) -> _FrameOutput:
        return _FrameOutput(torch.cat([self.logits, more.logits]), torch.cat([self.presence, more.presence]))


@dataclass(eq=False)
class _TrackingRun:
    """One clip's tracking: its objects' memories (in a transformers inference session, whose
    memory-gathering code the step reuses), the features of its current batch of frames, its outputs."""

    tracker: Sam2VideoTracker
    clip: ClipToTrack
    outputs: dict[int, _FrameOutput] = field(default_factory=dict)
    first_frame: list[int] = field(default_factory=list)
    detection_objects: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        device = self.tracker.device
        self.session = Sam2VideoInferenceSession(inference_device=device, inference_state_device=device,
                                                 dtype=self.tracker.dtype)
        self.features_start = 0
        self.levels: list[torch.Tensor] = []

    @property
    def n_objects(self) -> int:
        return len(self.first_frame)

    def encode_if_due(self, index: int) -> None:
        """Encode the clip's next batch_size frames at once when the steps reach them."""
        tracker = self.tracker
        if index % tracker.batch_size:
            return
        pixels = sam2_pixels(self.clip.frames[index:index + tracker.batch_size], tracker.image_size, tracker.norm,
                             tracker.device, tracker.dtype)
        features = tracker.model.get_image_features(pixels)
        # the feature levels [HW, frames, C] and the top level's position encoding (the only one read)
        self.features_start, self.levels = index, [*features.fpn_hidden_states, features.fpn_position_encoding[-1]]

    def features(self, index: int) -> list[torch.Tensor]:
        """Frame `index`'s feature levels [HW, 1, C], then its top level's position encoding."""
        offset = index - self.features_start
        return [level[:, offset:offset + 1] for level in self.levels]

    def record(self, index: int, masks: torch.Tensor, scores: torch.Tensor) -> None:
        logits = F.interpolate(masks.float(), size=self.clip.out_size, mode="bilinear", align_corners=False,
                               antialias=True)[:, 0]
        output = _FrameOutput(logits.half(), scores.float().sigmoid())
        earlier = self.outputs.get(index)
        self.outputs[index] = output if earlier is None else earlier.extended(output)

    def start_objects(self, index: int) -> list[tuple[int, torch.Tensor]]:
        """The objects frame `index`'s detections start (those no tracked object covers, up to
        max_objects), with their box corners [1, 1, 2, 2] in model pixels."""
        boxes = self.clip.boxes_at.get(index)
        if boxes is None or not len(boxes):
            return []
        objects = np.full(len(boxes), NEW_OBJECT)
        if index in self.outputs:
            objects = self._continued_objects(boxes, self.outputs[index])
        room = max(0, self.tracker.max_objects - self.n_objects)
        started = []
        for detection in np.flatnonzero(objects == NEW_OBJECT)[:room]:
            objects[detection] = self._add_object(index)
            started.append((int(objects[detection]), self._corners(boxes[detection])))
        self.detection_objects[index] = objects
        return started

    def _continued_objects(self, boxes: np.ndarray, output: _FrameOutput) -> np.ndarray:
        """Per detection, the tracked object whose mask box overlaps it most, if by new_object_iou."""
        frame_size = self.clip.frames.shape[1:3]
        mask_boxes = mask_bounding_boxes(output.logits.float().cpu().numpy() > 0, frame_size)
        visible = (output.presence.cpu().numpy() > 0.5) & np.isfinite(mask_boxes[:, 0])
        iou = box_iou(boxes, np.nan_to_num(mask_boxes)) * visible[None]
        return np.where(iou.max(axis=1) >= self.tracker.new_object_iou, iou.argmax(axis=1), NEW_OBJECT)

    def _add_object(self, index: int) -> int:
        object_id = self.n_objects
        self.session.obj_id_to_idx(object_id)  # the session's per-object memory
        self.first_frame.append(index)
        return object_id

    def _corners(self, box: np.ndarray) -> torch.Tensor:
        height, width = self.clip.frames.shape[1:3]
        side = self.tracker.image_size
        return torch.tensor(box, dtype=torch.float32).reshape(1, 1, 2, 2) * torch.tensor([side / width, side / height])

    def prune(self, index: int) -> None:
        """Drop the tracked frames SAM2 never reads again."""
        oldest_kept = index - self.tracker.memory_frames
        for per_object in self.session.output_dict_per_obj.values():
            tracked = per_object["non_cond_frame_outputs"]
            for frame in [frame for frame in tracked if frame < oldest_kept]:
                del tracked[frame]

    def result(self) -> TrackedObjects:
        n_frames, device = len(self.clip.frames), self.tracker.device
        logits = torch.full((self.n_objects, n_frames, *self.clip.out_size), ABSENT_LOGIT, dtype=torch.float16,
                            device=device)
        presence = torch.zeros((self.n_objects, n_frames), dtype=torch.float32, device=device)
        for index, output in self.outputs.items():
            known = len(output.presence)
            logits[:known, index] = output.logits
            presence[:known, index] = output.presence
        return TrackedObjects(logits.cpu().numpy(), presence.cpu().numpy(),
                              np.asarray(self.first_frame, dtype=np.int64), self.detection_objects)


def mask_bounding_boxes(masks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes [N, 4] (x1, y1, x2, y2 in pixels of a frame of frame_size (height, width)) around masks
    [N, h, w] bool; NaN for empty masks."""
    n, height, width = masks.shape
    boxes = np.full((n, 4), np.nan, dtype=np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    scale = np.array([frame_size[1] / width, frame_size[0] / height] * 2, dtype=np.float32)
    for i in range(n):
        if rows[i].any():
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            boxes[i] = np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32) * scale
    return boxes
