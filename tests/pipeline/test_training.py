"""Training and evaluation of both networks on tiny synthetic data, through the CLI too."""

from __future__ import annotations

import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchvision
import typer
from typer.testing import CliRunner

from agent.cli import model as model_cli
from pipeline.bundle import load_bundle, save_bundle
from pipeline.inference import ClassificationModel, SegmentationModel
from pipeline.networks import UNET_RESNET34, build_network
from pipeline.training import demo as demo_module
from pipeline.training.cls import ClsOptions, train_classification
from pipeline.training.data import (
    ClsCase,
    DataError,
    SegCase,
    load_classification_cases,
    load_segmentation_cases,
    read_nifti,
)
from pipeline.training.demo import (
    DemoSettings,
    classification_phantoms,
    demo_key,
    demo_segmentation_cases,
    ensure_demo_bundles,
    segmentation_phantoms,
    train_demo_classifier,
)
from pipeline.training.loop import TrainConfig
from pipeline.training.seg import train_segmentation
from pipeline.training.seg_metrics import dice
from pipeline.training.split import split_cases
from pipeline.training.stats import auc_score, binary_metrics, compare_with_reader
from tests.pipeline.test_bundle import manifest_fields

CHAOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "chaos-t2spir"
CLS_PHANTOMS, CLS_EPOCHS = 60, 10
LAS = np.diag([-1.5, 1.5, 5.0, 1.0])  # CHAOS-like NIfTI affine (i to the left, j anterior)


def ellipse_volume(seed: int, n: int = 8, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A body ellipse with a brighter 'liver' ellipse on the image left (patient's right)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pixels = np.zeros((n, size, size), np.float32)
    mask = np.zeros((n, size, size), bool)
    body = ((yy - size / 2) / (size * 0.42)) ** 2 + ((xx - size / 2) / (size * 0.47)) ** 2 < 1
    for k in range(n):
        cy, cx = size * 0.45 + rng.normal(0, 2), size * 0.33 + rng.normal(0, 2)
        ry, rx = size * (0.14 + 0.06 * np.sin(np.pi * (k + 1) / (n + 1))), size * 0.17
        liver = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        pixels[k] = body * 200 + liver * 250 + rng.normal(0, 15, (size, size))
        mask[k] = liver
    return pixels, mask


def write_chaos_style(folder: Path, seeds: list[int]) -> None:
    """Write image_<seed>/label_<seed> NIfTI pairs whose DICOM-order reading is ellipse_volume."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        pixels, mask = ellipse_volume(seed)
        for name, arr in (("image", pixels), ("label", mask.astype(np.float32))):
            data = arr.transpose(2, 1, 0)[:, ::-1, :]  # (slices, rows, cols) -> (i=L, j=A, k=S)
            nib.save(
                nib.Nifti1Image(np.ascontiguousarray(data), LAS), folder / f"{name}_{seed}.nii.gz"
            )


def cli() -> typer.Typer:
    app = typer.Typer()
    model_cli.register(app)
    return app


def test_split_is_by_case_reproducible_and_70_15_15() -> None:
    ids = [str(i) for i in (1, 3, 5, 8, 10, 15, 19, 20, 22, 31, 32, 34, 36, 37, 39)]
    split = split_cases(ids, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (10, 2, 3)
    assert sorted(split.train + split.val + split.test, key=int) == sorted(ids, key=int)
    assert split == split_cases(list(reversed(ids)), seed=0)
    assert split != split_cases(ids, seed=1)
    two = split_cases(["a", "b"], seed=0)
    assert (len(two.train), len(two.val), len(two.test)) == (1, 0, 1)
    assert split_cases(["a"], seed=0).train == ["a"]


def test_nifti_is_read_in_dicom_axial_order(tmp_path: Path) -> None:
    data = np.zeros((8, 10, 3), np.float32)  # (i, j, k)
    data[2, 5, 1] = 1.0
    nib.save(nib.Nifti1Image(data, LAS), tmp_path / "las.nii.gz")
    arr, spacing, thick = read_nifti(tmp_path / "las.nii.gz")
    assert arr.shape == (3, 10, 8)  # (slices, rows, columns)
    assert arr[1, 10 - 1 - 5, 2] == 1.0  # i -> column (to the left), j (anterior) -> row flipped
    assert spacing == (1.5, 1.5)
    assert thick == 5.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 1.0, 3.0, 1.0])), tmp_path / "ras.nii.gz")
    arr, spacing, _ = read_nifti(tmp_path / "ras.nii.gz")
    assert arr[1, 10 - 1 - 5, 8 - 1 - 2] == 1.0  # i runs to the right: columns flipped
    assert spacing == (1.0, 2.0)


@pytest.mark.skipif(not CHAOS.is_dir(), reason="CHAOS data folder absent")
def test_chaos_liver_lies_on_the_image_left() -> None:
    (case,) = load_segmentation_cases(CHAOS, case_ids=["1"])
    _rows, cols = np.nonzero(case.mask.any(axis=0))
    assert case.pixels.shape[1:] == (256, 256)
    assert cols.mean() < 128  # patient's right is the image left in DICOM display order
    assert case.pixel_spacing == (1.25, 1.25)


@pytest.mark.slow
def test_train_and_evaluate_seg_cli_beats_trivial_baseline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_chaos_style(data, [1, 2, 3, 4])
    out = tmp_path / "seg"
    runner = CliRunner()
    result = runner.invoke(
        cli(),
        [
            "train",
            "seg",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--input-size",
            "64",
            "--batch-size",
            "4",
            "--lr",
            "0.003",
            "--quiet",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    training = bundle.manifest.training
    assert training.split.train
    assert training.split.test
    assert training.epochs == 2
    assert "test_mean_dice" in training.metrics
    model = SegmentationModel(bundle, device="cpu")
    cases = load_segmentation_cases(data, case_ids=training.split.train)
    scores = [dice(model.segment(c.pixels), c.mask) for c in cases]
    baseline = [dice(np.ones_like(c.mask), c.mask) for c in cases]  # everything is liver
    assert np.mean(scores) > max(baseline) + 0.2, (scores, baseline)

    result = runner.invoke(
        cli(),
        ["evaluate", "seg", "--model", str(out), "--data", str(data), "--json", "--split", "all"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["dice"]) == {"1", "2", "3", "4"}
    assert np.isclose(report["mean_dice"], np.mean(list(report["dice"].values())))
    assert set(report["hd95_mm"]) == set(report["mean_surface_mm"]) == {"1", "2", "3", "4"}
    assert all(v is None or v >= 0 for v in report["hd95_mm"].values())
    assert set(report["summary"]) >= {"dice", "volume_error_pct"}
    result = runner.invoke(
        cli(),
        ["evaluate", "seg", "--model", str(out), "--data", str(data), "--split", "all"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "HD95 mm" in result.output
    assert "vol. err %" in result.output
    result = runner.invoke(
        cli(), ["evaluate", "seg", "--model", str(out), "--data", str(data), "--json"]
    )
    assert list(json.loads(result.output)["dice"]) == training.split.test


@pytest.mark.slow
def test_freeze_encoder_keeps_imagenet_weights(tmp_path: Path) -> None:
    torch.manual_seed(5)
    file_state = torchvision.models.resnet34(weights=None).state_dict()
    checkpoint = tmp_path / "resnet34.pth"
    torch.save(file_state, checkpoint)
    cases = [SegCase(str(s), *ellipse_volume(s, n=4), (1.5, 1.5), 5.0) for s in range(2)]
    config = TrainConfig(
        epochs=1, input_size=32, batch_size=4, encoder_weights=checkpoint, freeze_encoder=True
    )
    bundle = train_segmentation(cases, tmp_path / "b", config, data_description="t", progress=False)
    for key, value in file_state.items():
        if not key.startswith("fc."):
            assert torch.equal(bundle.state_dict[f"encoder.{key}"], value), key
    settings = bundle.manifest.training.settings
    assert settings["freeze_encoder"]
    assert settings["encoder_init"].startswith("imagenet:resnet34.pth")
    assert bundle.manifest.training.settings["history"][0]["train_loss"] > 0


def test_mismatched_encoder_weights_are_refused_by_the_cli(tmp_path: Path) -> None:
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), checkpoint)
    data = tmp_path / "data"
    write_chaos_style(data, [1])
    result = CliRunner().invoke(
        cli(),
        [
            "train",
            "seg",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "b"),
            "--encoder-weights",
            str(checkpoint),
            "--epochs",
            "1",
            "--input-size",
            "32",
        ],
    )
    assert result.exit_code == 1
    assert "not a torchvision resnet34 state dict" in result.output
    assert not (tmp_path / "b").exists()


def cls_cases(count: int, seed: int = 0, size: int = 48) -> list[ClsCase]:
    """Cirrhotic 'livers' are small and lumpy, normal ones large and smooth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for i in range(count):
        label = i % 2
        radius = size * (0.22 if label else 0.36) * rng.uniform(0.9, 1.1)
        angle = np.arctan2(yy - size / 2, xx - size / 2)
        bumps = 1 + (0.15 * np.sin(7 * angle + rng.uniform(0, 6)) if label else 0)
        mask = np.hypot(yy - size / 2, xx - size / 2) < radius * bumps
        image = (mask * 300 + rng.normal(0, 10, (size, size))).astype(np.float32)
        cases.append(ClsCase(f"c{i}", image, mask, label))
    return cases


@pytest.mark.slow
def test_train_cls_and_evaluate_cls_json(tmp_path: Path) -> None:
    data = tmp_path / "cls"
    data.mkdir()
    cases = cls_cases(10)
    with (data / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "label"])
        for case in cases:
            writer.writerow([case.case_id, "cirrhosis" if case.label else "normal"])
            for name, arr in (("image", case.image), ("mask", case.mask.astype(np.uint8))):
                img = arr.T[:, ::-1][..., None]  # 2D slice stored as a CHAOS-style NIfTI
                nib.save(
                    nib.Nifti1Image(np.ascontiguousarray(img), LAS),
                    data / f"{name}_{case.case_id}.nii.gz",
                )
    loaded = load_classification_cases(data)
    assert np.array_equal(loaded[3].mask, cases[3].mask)
    assert loaded[3].label == 1
    runner = CliRunner()
    out = tmp_path / "cls-bundle"
    result = runner.invoke(
        cli(),
        [
            "train",
            "cls",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--input-size",
            "48",
            "--batch-size",
            "4",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = load_bundle(out).manifest
    assert manifest.classification is not None
    assert manifest.classification.mode == "masked"
    assert manifest.input.size == (48, 48)
    result = runner.invoke(
        cli(),
        [
            "evaluate",
            "cls",
            "--model",
            str(out),
            "--data",
            str(data),
            "--json",
            "--split",
            "all",
            "--reader-accuracy",
            "0.90",
            "--reader-accuracy",
            "0.91",
            "--reader-cases",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("accuracy", "sensitivity", "specificity", "auc", "probabilities", "readers"):
        assert key in report
    assert report["n"] == 10
    assert set(report["labels"]) == {c.case_id for c in cases}
    assert [r["reader_accuracy"] for r in report["readers"]] == [0.90, 0.91]
    assert all(0 <= r["p_value"] <= 1 and "chi-square" in r["test"] for r in report["readers"])


def test_classification_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labels\.csv"):
        load_classification_cases(tmp_path)
    (tmp_path / "labels.csv").write_text("case,label\nx,maybe\n")
    with pytest.raises(DataError, match="not cirrhosis/normal/1/0"):
        load_classification_cases(tmp_path)
    with pytest.raises(DataError, match="no image_<case>"):
        load_segmentation_cases(tmp_path)


def test_cls_whole_mode_in_python(tmp_path: Path) -> None:
    cases = cls_cases(4, seed=1)
    bundle = train_classification(
        cases,
        tmp_path / "w",
        TrainConfig(epochs=1, input_size=32, batch_size=4, name="w"),
        ClsOptions(mode="whole", threshold=0.4),
        data_description="t",
        progress=False,
    )
    spec = bundle.manifest.classification
    assert spec is not None
    assert (spec.mode, spec.threshold) == ("whole", 0.4)
    assert bundle.manifest.input.normalisation.scope == "slice"


def test_metrics_and_reader_comparison() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc_score(labels, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert auc_score(np.array([1, 1]), np.array([0.2, 0.3])) is None
    m = binary_metrics(labels, np.array([0.1, 0.6, 0.7, 0.8]), 0.5)
    assert (m.accuracy, m.sensitivity, m.specificity, m.correct) == (0.75, 1.0, 0.5, 3)
    same = compare_with_reader(90, 100, 0.90, 100)
    assert same.chi2 == 0.0
    assert same.p_value == 1.0
    better = compare_with_reader(96, 100, 0.70, 100)
    assert better.p_value < 0.001
    assert better.model_accuracy == 0.96
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        compare_with_reader(1, 1, 1.5, 10)


TINY_DEMO = DemoSettings(
    seg_phantoms=3,
    seg_test_phantoms=1,
    seg_input=32,
    seg_epochs=1,
    seg_batch=8,
    cls_phantoms=4,
    cls_input=32,
    cls_epochs=1,
    cls_batch=4,
    cls_neighbours=0,
    matrix=64,
)


@pytest.mark.slow
def test_demo_bundles_are_labelled_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg, cls = ensure_demo_bundles(tmp_path, progress=False, settings=TINY_DEMO)
    assert seg.parent.name == f"demo-{demo_key(TINY_DEMO)}"
    for path, task in ((seg, "segmentation"), (cls, "classification")):
        manifest = load_bundle(path).manifest
        assert manifest.demo
        assert "DEMO" in manifest.name
        assert manifest.task == task
        assert manifest.intended_use.startswith("DEMO ONLY")
    assert demo_key(TINY_DEMO) != demo_key(DemoSettings())  # settings are part of the key

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached DEMO bundles were rebuilt")

    monkeypatch.setattr(demo_module, "build_demo_bundles", no_rebuild)
    assert ensure_demo_bundles(tmp_path, progress=False, settings=TINY_DEMO) == (seg, cls)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        seg.parent.name
    ]


def test_demo_is_built_once_by_concurrent_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_build(out: Path, **kwargs: object) -> tuple[Path, Path]:
        calls.append(out)
        time.sleep(0.5)
        assert not (out.parent / f"demo-{demo_key(TINY_DEMO)}").exists()  # only renamed when done
        fields = manifest_fields()
        state = build_network(UNET_RESNET34, 3, 1).state_dict()
        save_bundle(out / "segmentation", fields, state)
        save_bundle(out / "classification", fields, state)
        return out / "segmentation", out / "classification"

    monkeypatch.setattr(demo_module, "build_demo_bundles", fake_build)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda _: ensure_demo_bundles(tmp_path, settings=TINY_DEMO), range(3))
        )
    assert len(calls) == 1
    assert len(set(results)) == 1
    assert results[0][0].is_dir()


@pytest.mark.slow
def test_tiny_classifier_separates_held_out_phantoms(tmp_path: Path) -> None:
    settings = DemoSettings(
        cls_phantoms=CLS_PHANTOMS,
        cls_input=64,
        cls_epochs=CLS_EPOCHS,
        cls_batch=16,
        cls_neighbours=1,
        matrix=128,
    )
    path = train_demo_classifier(tmp_path / "cls", seed=7, settings=settings, progress=False)
    model = ClassificationModel(load_bundle(path), device="cpu")
    held_out = classification_phantoms(list(range(90000, 90010)), matrix=128)
    correct = [
        model.predict(cases[0].image, cases[0].mask).present == bool(cases[0].label)
        for cases in held_out.values()
    ]
    assert sum(s % 2 for s in held_out) == 5  # five cirrhotic, five normal
    assert np.mean(correct) >= 0.8, correct


def test_demo_segmentation_training_volumes_keep_the_liver_and_a_margin() -> None:
    (whole,) = segmentation_phantoms(1, seed=3, matrix=64)
    (cut,) = segmentation_phantoms(1, seed=3, matrix=64, margin=2)
    present = np.flatnonzero(whole.mask.any(axis=(1, 2)))
    first, last = max(0, present[0] - 2), min(whole.mask.shape[0], present[-1] + 3)
    assert cut.mask.shape[0] == last - first < whole.mask.shape[0]
    assert np.array_equal(cut.pixels, whole.pixels[first:last])
    assert cut.mask.sum() == whole.mask.sum()  # no liver slice lost

    settings = DemoSettings(seg_phantoms=4, seg_test_phantoms=1, seg_margin=2, matrix=64)
    cases, split = demo_segmentation_cases(settings, seed=3)
    assert split.val == []
    assert len(split.train) == 3
    (test_case,) = (c for c in cases if c.case_id in split.test)
    (fourth,) = segmentation_phantoms(1, seed=3, matrix=64, first=3)
    assert test_case.case_id == fourth.case_id
    assert np.array_equal(test_case.mask, fourth.mask)  # test volumes stay whole


def test_demo_classifier_cases_use_the_given_segmentation() -> None:
    seeds = [91000, 91001]
    truth = classification_phantoms(seeds, matrix=64)

    def nothing(image: np.ndarray) -> np.ndarray:
        return np.zeros(image.shape, dtype=bool)

    def box(image: np.ndarray) -> np.ndarray:
        mask = np.zeros(image.shape, dtype=bool)
        mask[:, 20:40, 16:48] = True
        return mask

    assert classification_phantoms(seeds, matrix=64, segment=nothing) == {s: [] for s in seeds}
    boxed = classification_phantoms(seeds, matrix=64, segment=box)
    for s in seeds:
        (case,) = boxed[s]
        assert case.mask.sum() == 20 * 32
        assert case.label == truth[s][0].label == s % 2
