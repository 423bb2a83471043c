"""Unit tests of bench.measure: the pure fidelity metrics, on hand-computed cases."""

import math

import numpy as np
import pytest

from bench.measure import (
    Boxes,
    binary_iou,
    box_f1,
    box_iou,
    character_error_rate,
    cosine_similarity,
    ctc_greedy_decode,
    decode_yolo,
    edit_distance,
    fidelity,
    frame_agreement,
    match_boxes,
    mean_pool,
    nms,
    rowwise_cosine,
    sqnr_db,
    task_metric,
    top1_agreement,
)

# --- cosine and SQNR ---------------------------------------------------------------------------


def test_cosine_of_identical_and_scaled_vectors_is_one():
    a = [np.array([1.0, 2.0, 3.0])]
    assert cosine_similarity(a, a) == pytest.approx(1.0)
    assert cosine_similarity(a, [2 * a[0]]) == pytest.approx(1.0)


def test_cosine_concatenates_arrays_of_any_shape():
    reference = [np.array([1.0, 0.0]), np.array([[0.0]])]
    test = [np.array([0.0, 1.0]), np.array([[0.0]])]
    assert cosine_similarity(reference, test) == pytest.approx(0.0)
    assert cosine_similarity([np.array([1.0, 1.0])], [np.array([1.0, 0.0])]) == pytest.approx(1 / math.sqrt(2))


def test_cosine_of_zero_vectors():
    zero = [np.zeros(3)]
    assert cosine_similarity(zero, zero) == 1.0
    assert cosine_similarity(zero, [np.ones(3)]) == 0.0


def test_cosine_rejects_size_mismatch():
    with pytest.raises(ValueError):
        cosine_similarity([np.zeros(3)], [np.zeros(4)])


def test_sqnr_hand_computed():
    # signal 1^2 + 1^2 = 2, noise 0.1^2 + 0.1^2 = 0.02: ratio 100 -> 20 dB
    assert sqnr_db([np.array([1.0, -1.0])], [np.array([1.1, -0.9])]) == pytest.approx(20.0)


def test_sqnr_of_exact_match_is_inf_and_of_zero_signal_is_minus_inf():
    x = [np.array([1.0, 2.0])]
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db([np.zeros(2)], [np.ones(2)]) == -math.inf


def test_sqnr_accepts_float32_without_overflow():
    big = [np.full(1000, 1e20, dtype=np.float32)]
    assert sqnr_db(big, [big[0] * np.float32(1.001)]) == pytest.approx(60.0, abs=0.1)


# --- CTC decode and CER ------------------------------------------------------------------------


def one_hot(labels, classes=5):
    return np.eye(classes)[labels]


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    assert ctc_greedy_decode(one_hot([0, 1, 1, 0, 1, 2, 2, 0])) == [1, 1, 2]
    assert ctc_greedy_decode(one_hot([0, 0, 0])) == []


def test_ctc_greedy_decode_other_blank():
    assert ctc_greedy_decode(one_hot([4, 1, 4, 4, 2]), blank=4) == [1, 2]


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ([], [], 0),
        ([1, 2, 3], [], 3),
        ([], [1], 1),
        ([1, 2, 3], [1, 2, 3], 0),
        ([1, 2, 3], [1, 3], 1),
        ([1, 2, 3], [1, 4, 3], 1),
        ([1, 2], [2, 1], 2),
        (list("kitten"), list("sitting"), 3),
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_cer_pools_edits_over_total_reference_length():
    # 1 edit in 4 characters + 0 in 6 = 1 / 10
    assert character_error_rate([[1, 2, 3, 4], [1] * 6], [[1, 2, 3], [1] * 6]) == pytest.approx(0.1)


def test_cer_with_empty_references():
    assert character_error_rate([[]], [[]]) == 0.0
    assert character_error_rate([[]], [[1]]) == 1.0
    with pytest.raises(ValueError):
        character_error_rate([[1]], [])


# --- IoU and top-1 -----------------------------------------------------------------------------


def test_binary_iou_hand_computed():
    reference = [np.array([[0.9, 0.9], [0.1, 0.1]])]
    test = [np.array([[0.9, 0.1], [0.9, 0.1]])]
    # masks {0, 1} and {0, 2}: intersection 1, union 3
    assert binary_iou(reference, test, 0.3) == pytest.approx(1 / 3)


def test_binary_iou_pools_over_maps_and_empty_masks_agree():
    assert binary_iou([np.zeros(4)], [np.zeros(4)], 0.3) == 1.0
    reference = [np.array([1.0, 0.0]), np.array([1.0, 1.0])]
    test = [np.array([1.0, 0.0]), np.array([1.0, 0.0])]
    assert binary_iou(reference, test, 0.5) == pytest.approx(2 / 3)


def test_binary_iou_threshold_is_strict():
    assert binary_iou([np.array([0.3])], [np.array([0.31])], 0.3) == 0.0


def test_top1_agreement_over_rows_of_all_arrays():
    reference = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.6, 0.4]])]
    test = [np.array([[0.2, 0.8], [0.4, 0.6]]), np.array([[0.7, 0.3]])]
    assert top1_agreement(reference, test) == pytest.approx(2 / 3)


# --- VAD frame agreement ----------------------------------------------------------------------


def test_frame_agreement_pools_frames_of_all_clips():
    reference = [np.array([0.9, 0.1, 0.6]), np.array([0.2])]
    test = [np.array([0.8, 0.7, 0.4]), np.array([0.3])]
    # decisions at 0.5: speech, -, speech | - vs speech, speech, - | -: frames 0 and 3 agree
    assert frame_agreement(reference, test, 0.5) == pytest.approx(2 / 4)


def test_frame_agreement_threshold_is_strict_and_empty_agrees():
    assert frame_agreement([np.array([0.5])], [np.array([0.51])], 0.5) == 0.0
    assert frame_agreement([np.array([0.5])], [np.array([0.1])], 0.5) == 1.0
    assert frame_agreement([np.zeros(0)], [np.zeros(0)], 0.5) == 1.0
    with pytest.raises(ValueError):
        frame_agreement([np.zeros(3)], [np.zeros(2)], 0.5)


# --- boxes -------------------------------------------------------------------------------------


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0]])


def test_box_iou_of_degenerate_boxes_is_zero():
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0.0


def test_nms_keeps_the_best_of_overlapping_boxes():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms(xyxy, scores, 0.45).tolist() == [1, 2]


def yolo_output(rows):
    """[4 + C, N] from rows of (cx, cy, w, h, class scores...)."""
    return np.array(rows, dtype=float).T


def test_decode_yolo_threshold_corners_class_and_nms():
    output = yolo_output(
        [
            [10, 10, 4, 4, 0.9, 0.1],  # kept: class 0
            [10, 10, 4, 4, 0.5, 0.1],  # suppressed by the first
            [50, 50, 10, 20, 0.1, 0.3],  # kept: class 1
            [90, 90, 4, 4, 0.2, 0.25],  # below the 0.25 threshold (strict)
        ]
    )
    boxes = decode_yolo(output)
    np.testing.assert_allclose(boxes.xyxy, [[8, 8, 12, 12], [45, 40, 55, 60]])
    np.testing.assert_allclose(boxes.scores, [0.9, 0.3])
    assert boxes.classes.tolist() == [0, 1]


def test_decode_yolo_with_no_box_above_threshold():
    assert len(decode_yolo(yolo_output([[1, 1, 1, 1, 0.1]]))) == 0


def boxes(*rows):
    """Boxes from rows of (x1, y1, x2, y2, class)."""
    array = np.array(rows, dtype=float).reshape(-1, 5)
    return Boxes(array[:, :4], np.ones(len(array)), array[:, 4].astype(int))


def test_match_boxes_needs_same_class_and_iou():
    reference = boxes((0, 0, 10, 10, 0), (20, 20, 30, 30, 1))
    assert match_boxes(reference, boxes((0, 0, 10, 9, 0), (20, 20, 30, 30, 2))) == 1
    assert match_boxes(reference, boxes((0, 0, 10, 4, 0))) == 0  # IoU 0.4
    assert match_boxes(reference, boxes()) == 0


def test_match_boxes_is_one_to_one():
    reference = boxes((0, 0, 10, 10, 0))
    assert match_boxes(reference, boxes((0, 0, 10, 10, 0), (0, 0, 10, 10, 0))) == 1


def test_box_f1_pooled_over_images():
    references = [boxes((0, 0, 10, 10, 0)), boxes((0, 0, 10, 10, 0), (20, 20, 30, 30, 0))]
    tests = [boxes((0, 0, 10, 10, 0)), boxes((0, 0, 10, 10, 0))]
    # matches 2, boxes 1 + 1 + 2 + 1 = 5: F1 = 4 / 5
    assert box_f1(references, tests) == pytest.approx(0.8)
    assert box_f1([boxes()], [boxes()]) == 1.0


# --- embeddings --------------------------------------------------------------------------------


def test_mean_pool_ignores_masked_positions():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])


def test_rowwise_cosine():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    np.testing.assert_allclose(rowwise_cosine(a, b), [0.0, 1.0, 0.0])


# --- task dispatch and fidelity ----------------------------------------------------------------


def test_task_metric_rec_decodes_each_sequence_of_each_batch():
    reference = [[one_hot([[1, 0, 2], [3, 3, 0]])]]  # one sample, batch 2: "1 2", "3"
    test = [[one_hot([[1, 0, 1], [3, 0, 3]])]]  # "1 1", "3 3": 2 edits over 3 chars
    assert task_metric("ocr-rec", [{}], reference, test) == pytest.approx(2 / 3)


def test_task_metric_embedding_uses_the_attention_mask():
    feeds = [{"attention_mask": np.array([[1, 0]])}]
    reference = [[np.array([[[1.0, 0.0], [0.0, 1.0]]])]]
    test = [[np.array([[[2.0, 0.0], [5.0, 5.0]]])]]  # differs only at the masked position
    assert task_metric("embedding", feeds, reference, test) == pytest.approx(1.0)


def test_task_metric_vad_reads_the_first_output_at_threshold_half():
    # outputs (speech_probs [T], hn, cn): only speech_probs counts, the states may differ freely
    reference = [[np.array([0.9, 0.45, 0.2, 0.7]), np.zeros((1, 1, 2)), np.zeros((1, 1, 2))]]
    test = [[np.array([0.6, 0.55, 0.1, 0.2]), np.ones((1, 1, 2)), np.ones((1, 1, 2))]]
    assert task_metric("vad", [{}], reference, test) == pytest.approx(2 / 4)


def test_task_metric_orientation_is_top1_agreement():
    reference = [[np.array([[0.1, 0.7, 0.1, 0.1]])], [np.array([[0.4, 0.3, 0.2, 0.1]])]]
    test = [[np.array([[0.1, 0.6, 0.2, 0.1]])], [np.array([[0.2, 0.3, 0.4, 0.1]])]]
    assert task_metric("orientation", [{}, {}], reference, test) == pytest.approx(0.5)


def test_task_metric_of_unknown_task_is_none():
    assert task_metric("", [{}], [[np.zeros(1)]], [[np.zeros(1)]]) is None


def test_fidelity_covers_every_output():
    reference = [[np.array([1.0, 0.0]), np.array([0.0])]]
    test = [[np.array([1.0, 0.0]), np.array([1.0])]]
    result = fidelity("", [{}], reference, test)
    assert result.cosine == pytest.approx(1 / math.sqrt(2))
    assert result.sqnr_db == pytest.approx(0.0)
    assert result.task_metric is None
