"""Fast DICOM Part 10 writing for many images of one series (PS3.5 7.1, PS3.10 7.1).

The constant elements of a series are encoded once with pydicom; each instance adds its own few
elements (UIDs, position, pixel data), encoded here directly, and is written as one byte string.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pydicom.valuerep import format_number_as_ds

from pipeline.phantoms.jpeg_lossless import encode_sv1

#: Transfer syntaxes the writer can produce, with how pixel data is encoded.
SUPPORTED_TRANSFER_SYNTAXES: dict[str, str] = {
    ExplicitVRLittleEndian: "native",
    ImplicitVRLittleEndian: "native",
    DeflatedExplicitVRLittleEndian: "native",
    RLELossless: "pydicom encoder (pylibjpeg-rle)",
    JPEGLSLossless: "pydicom encoder (pyjpegls)",
    JPEG2000Lossless: "pydicom encoder (pylibjpeg-openjpeg)",
    JPEGLosslessSV1: "own encoder (pipeline.phantoms.jpeg_lossless)",
}
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
_IMPLEMENTATION_VERSION = "LIVERAGENT_PH1"


def ds_str(value: float) -> str:
    """A DS value of at most 16 characters."""
    return format_number_as_ds(float(value))


def element(tag: int, vr: str, value: bytes, *, implicit: bool = False) -> bytes:
    """Encode one little-endian data element (value already in bytes, padded here)."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def text(values: str | Sequence[str]) -> bytes:
    if isinstance(values, str):
        return values.encode("ascii")
    return "\\".join(values).encode("ascii")


def numbers(values: Sequence[float]) -> bytes:
    return "\\".join(ds_str(v) for v in values).encode("ascii")


@dataclass(frozen=True)
class InstanceElements:
    """Elements that differ between the instances of a series: (tag, vr, value bytes)."""

    sop_instance_uid: str
    items: tuple[tuple[int, str, bytes], ...]


class SeriesWriter:
    """Writes the instances of one series that share ``template`` (no pixel data in it)."""

    def __init__(self, template: Dataset, transfer_syntax: str) -> None:
        if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
            raise ValueError(
                f"transfer syntax {transfer_syntax} is not supported; use one of "
                + ", ".join(SUPPORTED_TRANSFER_SYNTAXES)
            )
        self.ts = transfer_syntax
        self.implicit = transfer_syntax == ImplicitVRLittleEndian
        self.template = template
        self.constant: list[tuple[int, bytes]] = []
        for elem in template:
            fp = DicomBytesIO()
            fp.is_little_endian = True
            fp.is_implicit_VR = self.implicit
            write_data_element(fp, elem)
            self.constant.append((int(elem.tag), fp.getvalue()))

    def _meta(self, sop_uid: str) -> bytes:
        body = b"".join(
            (
                element(0x00020001, "OB", b"\0\x01"),
                element(0x00020002, "UI", text(MRImageStorage)),
                element(0x00020003, "UI", text(sop_uid)),
                element(0x00020010, "UI", text(self.ts)),
                element(0x00020012, "UI", text(PYDICOM_IMPLEMENTATION_UID)),
                element(0x00020013, "SH", text(_IMPLEMENTATION_VERSION)),
            )
        )
        return element(0x00020000, "UL", struct.pack("<I", len(body))) + body

    def _pixels(self, frame: npt.NDArray[np.uint16]) -> bytes:
        if SUPPORTED_TRANSFER_SYNTAXES[self.ts] == "native":
            return element(
                0x7FE00010, "OW", frame.astype("<u2", copy=False).tobytes(), implicit=self.implicit
            )
        bits = int(self.template.BitsStored)
        if self.ts == JPEGLosslessSV1:
            data = encode_sv1(frame, bits)
        else:
            data = get_encoder(self.ts).encode(
                np.ascontiguousarray(frame),
                rows=frame.shape[0],
                columns=frame.shape[1],
                samples_per_pixel=1,
                bits_allocated=16,
                bits_stored=bits,
                pixel_representation=0,
                photometric_interpretation="MONOCHROME2",
                number_of_frames=1,
            )
        # undefined length OB, Basic Offset Table item, one fragment, Sequence Delimitation Item
        body = encapsulate([data])
        return b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff" + body + b"\xfe\xff\xdd\xe0\0\0\0\0"

    def write(self, path: Path, inst: InstanceElements, frame: npt.NDArray[np.uint16]) -> None:
        """Write one Part 10 file: preamble, file meta, the dataset in tag order."""
        own = [(tag, element(tag, vr, val, implicit=self.implicit)) for tag, vr, val in inst.items]
        parts = sorted(self.constant + own, key=lambda t: t[0])
        dataset = b"".join(p for _, p in parts) + self._pixels(frame)
        if self.ts == DeflatedExplicitVRLittleEndian:
            comp = zlib.compressobj(6, zlib.DEFLATED, -15)
            dataset = comp.compress(dataset) + comp.flush()
            if len(dataset) % 2:
                dataset += b"\0"
        path.write_bytes(b"\0" * 128 + b"DICM" + self._meta(inst.sop_instance_uid) + dataset)
