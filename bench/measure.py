"""Pure fidelity metrics: arrays in, numbers out (numpy only, no I/O, no onnxruntime).

Every metric compares a quantized model's outputs with the float model's outputs on the same
inputs; the float model is the reference, never ground truth labels. ``task_metric`` picks the
metric that matters for a model's task; ``fidelity`` adds cosine and SQNR over all outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A model run's outputs for one sample, in graph output order.
Outputs = Sequence[np.ndarray]


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays raveled and concatenated as float64."""
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def cosine_similarity(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Cosine of the angle between ``reference`` and ``test``, each concatenated into one vector.

    cos = <r, t> / (|r| |t|); 1.0 when both are all zeros, 0.0 when only one is.
    """
    r, t = _flat(reference), _flat(test)
    if r.shape != t.shape:
        raise ValueError(f"size mismatch: {r.size} vs {t.size} values")
    norm = float(np.linalg.norm(r) * np.linalg.norm(t))
    if norm == 0.0:
        return 1.0 if not r.any() and not t.any() else 0.0
    return float(np.dot(r, t) / norm)


def sqnr_db(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum r^2 / sum (r - t)^2).

    ``inf`` when ``test`` equals ``reference`` exactly; ``-inf`` when the reference is all zeros
    and the test is not.
    """
    r, t = _flat(reference), _flat(test)
    if r.shape != t.shape:
        raise ValueError(f"size mismatch: {r.size} vs {t.size} values")
    noise = float(np.sum((r - t) ** 2))
    signal = float(np.sum(r**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def ctc_greedy_decode(probs: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC decode of one sequence ``probs[T, C]``: argmax per step, merge repeats, drop blanks."""
    best = np.asarray(probs).argmax(axis=-1)
    decoded = []
    previous = None
    for label in best.tolist():
        if label != previous and label != blank:
            decoded.append(label)
        previous = label
    return decoded


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def character_error_rate(references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]]) -> float:
    """Total edit distance over total reference length (pooled over all sequences).

    With empty references everywhere: 0.0 if every hypothesis is empty too, else 1.0.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references vs {len(hypotheses)} hypotheses")
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    length = sum(len(r) for r in references)
    if length == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / length


def binary_iou(reference: Sequence[np.ndarray], test: Sequence[np.ndarray], threshold: float) -> float:
    """IoU of the masks ``x > threshold``, pooled over all arrays: sum |R and T| / sum |R or T|.

    1.0 when both masks are empty everywhere.
    """
    r, t = _flat(reference) > threshold, _flat(test) > threshold
    if r.shape != t.shape:
        raise ValueError(f"size mismatch: {r.size} vs {t.size} values")
    union = int(np.count_nonzero(r | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(r & t)) / union


def top1_agreement(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Fraction of rows (last axis = classes) whose argmax agrees, over all arrays."""
    r = np.concatenate([np.asarray(a).reshape(-1, np.shape(a)[-1]) for a in reference])
    t = np.concatenate([np.asarray(a).reshape(-1, np.shape(a)[-1]) for a in test])
    if r.shape != t.shape:
        raise ValueError(f"shape mismatch: {r.shape} vs {t.shape}")
    if len(r) == 0:
        return 1.0
    return float(np.mean(r.argmax(axis=1) == t.argmax(axis=1)))


def frame_agreement(reference: Sequence[np.ndarray], test: Sequence[np.ndarray], threshold: float) -> float:
    """Fraction of values on the same side of ``threshold`` (``x > threshold`` in both or in neither), pooled.

    For a voice-activity detector: per-frame speech/non-speech decisions that agree. 1.0 when there is no value.
    """
    r, t = _flat(reference) > threshold, _flat(test) > threshold
    if r.shape != t.shape:
        raise ValueError(f"size mismatch: {r.size} vs {t.size} values")
    if r.size == 0:
        return 1.0
    return float(np.mean(r == t))


@dataclass(frozen=True)
class Boxes:
    """Detections of one image: ``xyxy[N, 4]`` corners, ``scores[N]``, ``classes[N]``."""

    xyxy: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes ``a[N, 4]`` and ``b[M, 4]`` -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        order = rest[box_iou(xyxy[best : best + 1], xyxy[rest])[0] < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolo(output: np.ndarray, score_threshold: float = 0.25, iou_threshold: float = 0.45) -> Boxes:
    """Decode one YOLOv8 head output ``[4 + C, N]`` (cx, cy, w, h, class scores) to boxes.

    Keeps boxes whose best class score exceeds ``score_threshold``, then class-agnostic NMS, as
    nudenet's own post-processing does.
    """
    rows = np.asarray(output, dtype=np.float64).T  # [N, 4 + C]
    class_scores = rows[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores.max(axis=1) if class_scores.shape[1] else np.zeros(len(rows))
    selected = scores > score_threshold
    cx, cy, w, h = rows[selected, :4].T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = nms(xyxy, scores[selected], iou_threshold)
    return Boxes(xyxy[keep], scores[selected][keep], classes[selected][keep])


def match_boxes(reference: Boxes, test: Boxes, iou_threshold: float = 0.5) -> int:
    """Number of one-to-one matches: same class and IoU >= ``iou_threshold``, greedy by IoU."""
    if not len(reference) or not len(test):
        return 0
    iou = box_iou(reference.xyxy, test.xyxy)
    iou[reference.classes[:, None] != test.classes[None, :]] = 0.0
    matches = 0
    while True:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < iou_threshold:
            return matches
        matches += 1
        iou[i, :] = 0.0
        iou[:, j] = 0.0


def box_f1(references: Sequence[Boxes], tests: Sequence[Boxes], iou_threshold: float = 0.5) -> float:
    """F1 of test boxes against reference boxes, pooled over images: 2 TP / (|R| + |T|).

    1.0 when neither side has any box.
    """
    if len(references) != len(tests):
        raise ValueError(f"{len(references)} reference images vs {len(tests)} test images")
    matched = sum(match_boxes(r, t, iou_threshold) for r, t in zip(references, tests))
    total = sum(len(r) + len(t) for r, t in zip(references, tests))
    return 1.0 if total == 0 else 2.0 * matched / total


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings ``[B, H]``: mean of ``hidden[B, T, H]`` over positions where ``mask[B, T]`` is set."""
    weights = np.asarray(mask, dtype=np.float64)[..., None]
    total = np.sum(np.asarray(hidden, dtype=np.float64) * weights, axis=1)
    return total / np.clip(weights.sum(axis=1), 1e-9, None)


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a[N, D]`` with the same row of ``b[N, D]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide(np.sum(a * b, axis=1), norm, out=np.zeros(len(a)), where=norm > 0)


# --- task metrics: (feeds, float outputs, quantized outputs) per sample -> one number -------------

TASK_METRICS = {
    "ocr-rec": "CER",  # character error rate of greedy CTC decode vs float (lower is better)
    "ocr-cls": "top1",  # top-1 agreement with float
    "ocr-det": "IoU",  # IoU of the probability map binarised at 0.3
    "detection": "boxF1",  # F1 of decoded boxes vs float boxes at IoU >= 0.5
    "embedding": "embcos",  # mean cosine of mean-pooled sentence embeddings
    "vad": "VADagree",  # agreement of per-frame speech decisions at silero-vad's threshold 0.5
    "orientation": "top1",  # top-1 agreement with float (document orientation)
}

DET_THRESHOLD = 0.3
VAD_THRESHOLD = 0.5  # silero-vad's default speech threshold (get_speech_timestamps)


def task_metric(
    task: str,
    feeds: Sequence[dict[str, np.ndarray]],
    reference: Sequence[Outputs],
    test: Sequence[Outputs],
) -> float | None:
    """The task's own agreement metric (see ``TASK_METRICS``) of ``test`` vs ``reference``; None if the task has none.

    ``reference[i]`` and ``test[i]`` are the outputs of sample ``feeds[i]``; the first output is the
    one the task reads.
    """
    first_r = [outs[0] for outs in reference]
    first_t = [outs[0] for outs in test]
    if task == "ocr-rec":  # [B, T, C] probabilities per sample
        refs = [ctc_greedy_decode(seq) for batch in first_r for seq in batch]
        hyps = [ctc_greedy_decode(seq) for batch in first_t for seq in batch]
        return character_error_rate(refs, hyps)
    if task in ("ocr-cls", "orientation"):
        return top1_agreement(first_r, first_t)
    if task == "vad":  # speech probability per frame, [T] per sample
        return frame_agreement(first_r, first_t, VAD_THRESHOLD)
    if task == "ocr-det":
        return binary_iou(first_r, first_t, DET_THRESHOLD)
    if task == "detection":  # [B, 4 + C, N] per sample
        refs = [decode_yolo(image) for batch in first_r for image in batch]
        tests = [decode_yolo(image) for batch in first_t for image in batch]
        return box_f1(refs, tests)
    if task == "embedding":  # last_hidden_state [B, T, H]
        cosines = [
            rowwise_cosine(mean_pool(r, f["attention_mask"]), mean_pool(t, f["attention_mask"]))
            for f, r, t in zip(feeds, first_r, first_t)
        ]
        return float(np.mean(np.concatenate(cosines)))
    return None


@dataclass(frozen=True)
class Fidelity:
    """Agreement of a quantized model with the float model on the eval split."""

    cosine: float
    sqnr_db: float
    task_metric: float | None


def fidelity(
    task: str,
    feeds: Sequence[dict[str, np.ndarray]],
    reference: Sequence[Outputs],
    test: Sequence[Outputs],
) -> Fidelity:
    """Cosine and SQNR over every output of every sample (concatenated), plus the task metric."""
    flat_r = [a for outs in reference for a in outs]
    flat_t = [a for outs in test for a in outs]
    return Fidelity(
        cosine_similarity(flat_r, flat_t), sqnr_db(flat_r, flat_t), task_metric(task, feeds, reference, test)
    )
