"""pipeline.training.chaos: the one-command build (a fixed epoch count from a time budget, a
model card, the same metrics for the same seed) and subject-level cross-validation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.bundle import load_bundle
from pipeline.training.augment import random_bias_field, random_organ_contrast
from pipeline.training.chaos import (
    ChaosRecipe,
    build_chaos,
    cross_validate,
    epochs_for,
    subject_folds,
)
from tests.pipeline.test_training import write_chaos_style

pytestmark = pytest.mark.slow

TINY = ChaosRecipe(input_size=32, batch_size=4, lr=3e-3)


def test_epochs_come_from_the_budget_not_the_clock() -> None:
    assert epochs_for(10, 330, "cpu") == int(10 * 280 / 330)
    assert epochs_for(10, 330, "cpu", input_size=128) == int(10 * 280 * 4 / 330)
    assert epochs_for(0.0, 330, "cpu") == 1
    assert epochs_for(10, 330, "cpu") == epochs_for(10, 330, "cpu")


def test_folds_cover_every_subject_once_and_depend_on_the_seed() -> None:
    ids = [str(i) for i in (1, 3, 5, 8, 10, 15, 19, 20, 22, 31, 32, 34, 36, 37, 39)]
    folds = subject_folds(ids, 5, seed=0)
    assert sorted(c for fold in folds for c in fold) == sorted(ids)
    assert [len(f) for f in folds] == [3] * 5
    assert subject_folds(ids, 5, seed=0) == folds
    assert subject_folds(ids, 5, seed=1) != folds
    with pytest.raises(ValueError, match="folds"):
        subject_folds(ids[:3], 5, seed=0)


def test_bias_field_is_smooth_bounded_and_seeded() -> None:
    images = torch.full((3, 3, 32, 32), 0.5)
    a = random_bias_field(images, torch.Generator().manual_seed(1), strength=0.3)
    b = random_bias_field(images, torch.Generator().manual_seed(1), strength=0.3)
    assert torch.equal(a, b)
    ratio = a / images
    assert float(ratio.min()) >= np.exp(-0.3) - 1e-5
    assert float(ratio.max()) <= np.exp(0.3) + 1e-5
    assert torch.equal(a[:, 0], a[:, 1])  # one field for every channel
    assert float((a[:, :, :, 1:] - a[:, :, :, :-1]).abs().max()) < 0.05  # smooth


def test_organ_contrast_changes_the_organ_alone_in_about_half_the_images() -> None:
    images = torch.full((200, 3, 48, 48), 0.5)
    masks = torch.zeros((200, 1, 48, 48))
    masks[:, :, 12:36, 12:36] = 1.0
    a = random_organ_contrast(images, masks, torch.Generator().manual_seed(3))
    b = random_organ_contrast(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # seeded
    outside = masks.expand_as(images) == 0
    assert torch.equal(a[outside], images[outside])  # the surroundings never change
    centre = a[:, 0, 24, 24] / 0.5  # the organ's core gets the whole factor
    changed = (centre - 1.0).abs() > 1e-6
    assert 70 <= int(changed.sum()) <= 130  # p = 0.5
    assert float(centre.min()) >= 0.25 - 1e-5
    assert float(centre.max()) <= 1.3 + 1e-5
    assert float(centre.min()) < 0.5 < 1.2 < float(centre.max())  # darker and brighter
    assert torch.equal(a[:, 0], a[:, 2])  # one gain for every channel (2.5D context)
    edge = a[changed][:, 0, 24, 12:25]  # the gain fades in from the outline inwards
    step = (edge[:, 1:] - edge[:, :-1]).abs().amax()
    assert float(step) < 0.5 * float((centre[changed] - 1.0).abs().amax() * 0.5)


def test_build_twice_with_one_seed_gives_one_model_card(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_chaos_style(data, [1, 2, 3, 4, 5])  # split 3 / 1 / 1
    cards = []
    for run in ("a", "b"):
        bundle = build_chaos(
            data, tmp_path / run, minutes=0.004, device="cpu", seed=4, recipe=TINY, progress=False
        )
        cards.append(load_bundle(bundle.path).manifest.training.settings["model_card"])
    a, b = cards
    assert a["test_metrics"] == b["test_metrics"]
    assert a["epochs"] == b["epochs"] >= 1
    assert sorted(a["training_subjects"] + a["validation_subjects"] + a["test_subjects"]) == [
        str(i) for i in range(1, 6)
    ]
    assert a["epochs"] == 2  # 0.004 min x 280 x (256 / 32)^2 slices/min / 24 training slices
    assert set(a["test_metrics"]["dice"]) == set(a["test_subjects"])
    assert "CC BY-NC-SA 4.0" in a["data_licence"]
    assert "Kavur" in a["citation"]
    manifest = load_bundle(tmp_path / "a").manifest
    assert manifest.intended_use.startswith("RESEARCH USE ONLY")
    assert not manifest.demo
    assert "test_mean_hd95_mm" in manifest.training.metrics or not any(
        v is not None for v in a["test_metrics"]["hd95_mm"].values()
    )


def test_cross_validation_tests_each_subject_once_and_writes_json_and_csv(
    tmp_path: Path,
) -> None:
    from agent.cli import app

    data = tmp_path / "data"
    write_chaos_style(data, [1, 2, 3, 4])
    out = tmp_path / "cv"
    result = CliRunner().invoke(
        app,
        ["model", "cv-seg", "--data", str(data), "--out", str(out), "--folds", "2",
         "--epochs", "1", "--input-size", "32", "--device", "cpu", "--seed", "2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert sorted(c for fold in report["folds"] for c in fold) == ["1", "2", "3", "4"]
    assert set(report["variants"]) == {"plain", "no_postprocessing", "flip_tta"}
    for variant in report["variants"].values():
        assert set(variant["dice"]) == {"1", "2", "3", "4"}
    with (out / "cv.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 4
    assert {r["subject"] for r in rows} == {"1", "2", "3", "4"}
    # the same seed gives the same folds and metrics (the python entry point, same settings)
    again = cross_validate(
        data, tmp_path / "cv2", folds=2, epochs=1, device="cpu", seed=2,
        recipe=ChaosRecipe(input_size=32), progress=False,
    )  # fmt: skip
    assert again.folds == report["folds"]
    assert again.variants["plain"].dice == report["variants"]["plain"]["dice"]
    assert report["recipe"]["input"].startswith("32 x 32")
    # one fold alone (a quick comparison of recipes): the same folds, its subjects only, and
    # with the organ-contrast augmentation named in the recipe
    second = CliRunner().invoke(
        app,
        ["model", "cv-seg", "--data", str(data), "--out", str(tmp_path / "cv3"), "--folds", "2",
         "--epochs", "1", "--input-size", "32", "--device", "cpu", "--seed", "2", "--json",
         "--fold", "2", "--organ-contrast"],
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    one = json.loads((tmp_path / "cv3" / "cv.json").read_text())
    assert one["folds"] == report["folds"]
    assert set(one["variants"]["plain"]["dice"]) == set(report["folds"][1])
    assert "organ contrast" in one["recipe"]["augmentation"]
    assert not (tmp_path / "cv3" / "fold-1").exists()
    bad = CliRunner().invoke(
        app,
        ["model", "cv-seg", "--data", str(data), "--out", str(tmp_path / "cv4"), "--folds", "2",
         "--epochs", "1", "--input-size", "32", "--device", "cpu", "--fold", "3"],
    )  # fmt: skip
    assert bad.exit_code == 1
    assert "--fold must be between 1 and 2" in bad.output
