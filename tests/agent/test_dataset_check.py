"""A data set cut short in transit is never taken for a whole one (the structural walk)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from agent.dataset_check import IncompleteDatasetError, check_complete, dataset_offset
from tests.factory import mr_dataset


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_sequences(syntax: str) -> bytes:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    ds.file_meta.TransferSyntaxUID = syntax
    inner = Dataset()
    inner.CodeMeaning = "bottom"
    for _ in range(50):  # deep nesting is fine as long as it is closed
        outer = Dataset()
        outer.ContentSequence = [inner]
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return _part10(ds)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_whole_data_sets_pass_and_every_cut_fails(syntax: str) -> None:
    data = _with_sequences(syntax)
    check_complete(data, syntax)
    start = dataset_offset(data)
    for cut in sorted({start + 7, start + 40, len(data) // 2, len(data) - 100, len(data) - 1}):
        with pytest.raises(IncompleteDatasetError):
            check_complete(data[:cut], syntax)


def test_undefined_lengths_must_be_closed() -> None:
    ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    frame = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].is_undefined_length = True
    data = _part10(ds)
    check_complete(data, JPEGBaseline8Bit)
    with pytest.raises(IncompleteDatasetError, match="unfinished frags"):
        check_complete(data[:-8], JPEGBaseline8Bit)  # the sequence delimiter is missing
    with pytest.raises(IncompleteDatasetError, match="fragment"):
        check_complete(data[:-20], JPEGBaseline8Bit)


def test_an_element_that_claims_more_than_follows_is_named() -> None:
    data = _part10(mr_dataset(study_uid=generate_uid(), series_uid=generate_uid()))
    bogus = b"\x11\x00\x10\x10OB\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"\x00" * 16
    with pytest.raises(IncompleteDatasetError, match=r"\(0011,1010\) declares 4294967280 bytes"):
        check_complete(data + bogus, ExplicitVRLittleEndian)
    with pytest.raises(IncompleteDatasetError, match="Part 10"):
        check_complete(b"\x00" * 200, ExplicitVRLittleEndian)
