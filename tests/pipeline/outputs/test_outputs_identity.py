"""One identity object sets every result object's equipment and series attributes."""

from __future__ import annotations

import pytest

from pipeline.outputs import OutputOptions, build_outputs
from pipeline.outputs.identity import SERIES_LABELS, SERIES_NUMBERS, ResultIdentity
from pipeline.results import ModelInfo
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_not_evaluated, make_result

SEG_MODEL = ModelInfo("liver-seg-demo", "0.3.0", "segmentation", "unet-resnet34", True, "ab" * 32)
CLS_MODEL = ModelInfo("liver-cls", "1.0.0", "classification", "resnet50", False, "cd" * 32)


def test_sop_arguments_name_the_device_and_every_contributor() -> None:
    identity = ResultIdentity("sr", CLS_MODEL, (CLS_MODEL, SEG_MODEL), "0.1.0")
    args = identity.sop_arguments()
    assert args["series_number"] == 9902
    assert args["instance_number"] == 1
    assert args["manufacturer"] == "liver-agent"
    assert args["manufacturer_model_name"] == "liver-cls"
    assert args["software_versions"] == "liver-cls 1.0.0"
    assert args["device_serial_number"] == "cd" * 8
    # a demo segmentation bundle contributed: the description says DEMO
    assert args["series_description"] == "DEMO AI Liver SR - RESEARCH USE ONLY"
    names = [e.ManufacturerModelName for e in args["contributing_equipment"]]
    assert names == ["liver-cls", "liver-seg-demo"]
    other = ResultIdentity("sr", CLS_MODEL, (CLS_MODEL,), "0.1.0")
    assert other.series_instance_uid != identity.series_instance_uid
    assert other.sop_instance_uid != identity.sop_instance_uid
    assert other.series_description == "AI Liver SR - RESEARCH USE ONLY"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ResultIdentity("pdf", None, (), "0.1.0")


def test_every_builder_writes_its_identity() -> None:
    series = make_mr_series(6, 32, 32)
    objects = build_outputs(make_result(series), OutputOptions(sc=True, kos=True))
    objects += build_outputs(make_not_evaluated(series, "no_axial_t2", "no axial T2 series"))
    assert sorted(o.kind for o in objects) == sorted(SERIES_NUMBERS)
    for obj in objects:
        ds = obj.dataset
        assert ds.SeriesNumber == SERIES_NUMBERS[obj.kind], obj.kind
        assert ds.SeriesDescription == f"AI Liver {SERIES_LABELS[obj.kind]} - RESEARCH USE ONLY"
        assert ds.Manufacturer == "liver-agent"
        assert ds.InstanceNumber == 1
        assert len(ds.SoftwareVersions) == 2  # the bundle, then liver-agent
        assert ds.SoftwareVersions[1].startswith("liver-agent ")
    assert len({o.series_instance_uid for o in objects}) == len(objects)
