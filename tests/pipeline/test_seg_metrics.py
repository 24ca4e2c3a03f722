"""pipeline.training.seg_metrics: Dice, HD95, mean surface distance and volume error on masks
whose distances are known."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.evaluate import SegEvaluation
from pipeline.training.seg_metrics import case_metrics, dice, surface_distances_mm


def _box(shape: tuple[int, int, int], start: tuple[int, int, int], size: tuple[int, int, int]):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


def test_identical_masks_are_at_distance_zero() -> None:
    box = _box((20, 30, 30), (5, 5, 5), (8, 12, 12))
    m = case_metrics(box, box, (3.0, 1.0, 1.0))
    assert m.dice == 1.0
    assert m.hd95_mm == 0.0
    assert m.mean_surface_mm == 0.0
    assert m.volume_error_ml == 0.0
    assert m.volume_error_pct == 0.0


@pytest.mark.parametrize(
    ("axis", "shift", "spacing", "expected_mm"),
    [(0, 1, (4.0, 1.0, 1.0), 4.0), (1, 3, (4.0, 1.5, 1.0), 4.5), (2, 2, (2.0, 1.0, 0.5), 1.0)],
)
def test_hd95_of_a_shifted_box_is_the_shift_in_mm(
    axis: int, shift: int, spacing: tuple[float, float, float], expected_mm: float
) -> None:
    truth = _box((24, 40, 40), (6, 8, 8), (10, 20, 20))
    pred = np.roll(truth, shift, axis=axis)
    hd95, msd = surface_distances_mm(pred, truth, spacing)
    assert hd95 == pytest.approx(expected_mm)
    assert msd is not None
    assert 0.0 < msd < expected_mm  # side faces stay put, the moved faces are `shift` away


def test_surface_distances_scale_with_the_voxel_size() -> None:
    truth = _box((24, 40, 40), (6, 8, 8), (10, 20, 20))
    pred = _box((24, 40, 40), (7, 10, 7), (8, 15, 22))
    hd_a, msd_a = surface_distances_mm(pred, truth, (2.0, 1.0, 1.0))
    hd_b, msd_b = surface_distances_mm(pred, truth, (6.0, 3.0, 3.0))
    assert hd_a is not None
    assert msd_a is not None
    assert hd_b == pytest.approx(3 * hd_a)
    assert msd_b == pytest.approx(3 * msd_a)


def test_an_empty_prediction_has_no_surface_distance_and_loses_all_volume() -> None:
    truth = _box((10, 10, 10), (2, 2, 2), (5, 5, 4))
    m = case_metrics(np.zeros_like(truth), truth, (2.0, 1.0, 0.5))
    assert m.dice == 0.0
    assert m.hd95_mm is None
    assert m.mean_surface_mm is None
    assert m.label_volume_ml == pytest.approx(100 * 2.0 * 1.0 * 0.5 / 1000)
    assert m.volume_error_pct == -100.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_evaluation_summary_and_json() -> None:
    truth = _box((20, 30, 30), (5, 5, 5), (8, 12, 12))
    cases = {
        "a": case_metrics(truth, truth, (1.0, 1.0, 1.0)),
        "b": case_metrics(np.roll(truth, 2, axis=1), truth, (1.0, 1.0, 1.0)),
        "c": case_metrics(np.zeros_like(truth), truth, (1.0, 1.0, 1.0)),
    }
    evaluation = SegEvaluation.from_cases("test", cases)
    summary = evaluation.summary()
    assert summary["hd95_mm"]["mean"] == pytest.approx(1.0)  # (0 + 2) / 2: c has none
    assert summary["dice"]["min"] == 0.0
    assert evaluation.mean_dice == pytest.approx(np.mean([1.0, cases["b"].dice, 0.0]))
    data = evaluation.to_json()
    assert data["hd95_mm"]["c"] is None
    assert data["volume_error_pct"]["c"] == -100.0
