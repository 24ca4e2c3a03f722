"""Read the pixel values of one single-frame greyscale image file (PS3.5 8, A.4): native
little-endian pixel data straight from the file's tail, anything else through pydicom's decoders."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.errors import NotEvaluatedError

logger = logging.getLogger(__name__)

PIXEL_DATA_TAG = 0x7FE00010


def read_stored_values(path: Path, header: Dataset) -> npt.NDArray[np.float32]:
    """The pixel values of one image, after RescaleSlope/RescaleIntercept, as float32.

    ``header`` is the file's dataset read without pixel data (or with it, which is then used).
    Native Explicit/Implicit VR Little Endian files whose last element is the pixel data are read
    directly (one read of the file); all other files go through :func:`pydicom.pixels.pixel_array`
    (pylibjpeg, pyjpegls and pillow decode JPEG, JPEG-LS, JPEG 2000 and RLE).

    Raises
    ------
    NotEvaluatedError
        ``unreadable_pixel_data``, naming the transfer syntax and the SOP Instance UID.
    """
    rows, columns = int(header.Rows), int(header.Columns)
    try:
        stored = _native_tail(path, header)
        if stored is None:
            stored = pixel_array(_decoder_source(path, header))
    except Exception as err:  # any reader or decoder failure means the same thing to the user
        raise NotEvaluatedError(
            "unreadable_pixel_data",
            f"the pixel data of image {header.get('SOPInstanceUID', '?')} "
            f"({transfer_syntax_name(header)}) could not be read: {' '.join(str(err).split())}",
        ) from err
    if stored.shape != (rows, columns):
        raise NotEvaluatedError(
            "unreadable_pixel_data",
            f"the pixel data of image {header.get('SOPInstanceUID', '?')} "
            f"({transfer_syntax_name(header)}) has shape {stored.shape}, not {rows}x{columns}",
        )
    slope = float(header.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(header.get("RescaleIntercept", 0.0) or 0.0)
    pixels = stored.astype(np.float32)
    if slope != 1.0:
        pixels *= np.float32(slope)
    if intercept != 0.0:
        pixels += np.float32(intercept)
    return pixels


def _syntax(header: Dataset) -> UID | None:
    meta = getattr(header, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def _native_tail(path: Path, header: Dataset) -> npt.NDArray[np.integer] | None:
    """Native pixel data that ends the file, checked against its element header; else None."""
    syntax = _syntax(header)
    bits = int(header.get("BitsAllocated", 0))
    if "PixelData" in header or bits not in (8, 16) or int(header.get("SamplesPerPixel", 1)) != 1:
        return None
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return None
    count = int(header.Rows) * int(header.Columns)
    length = count * bits // 8
    length += length % 2
    data = Path(path).read_bytes()
    start = len(data) - length
    if syntax == ExplicitVRLittleEndian:
        element = data[start - 12 : start]
        expected = {struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length) for vr in (b"OW", b"OB")}
    else:
        element = data[start - 8 : start]
        expected = {struct.pack("<HHI", 0x7FE0, 0x0010, length)}
    if start < 132 or element not in expected:
        return None  # pixel data is not the last element: let pydicom find it
    signed = int(header.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    values = np.frombuffer(data, dtype, count=count, offset=start)
    unused = bits - int(header.get("BitsStored", bits))
    if 0 < unused < bits:  # as pydicom does: drop bits above BitsStored, sign-extend if signed
        values = (values << unused) >> unused if signed else values & ((1 << (bits - unused)) - 1)
    return values.reshape(int(header.Rows), int(header.Columns))


def _decoder_source(path: Path, header: Dataset) -> Dataset | Path:
    """The header when it holds the pixel data; the whole dataset of a deflated file (PS3.5 A.5),
    which ``pixel_array(path)`` cannot inflate; else the path (pydicom reads only what it needs)."""
    if "PixelData" in header:
        return header
    syntax = _syntax(header)
    if syntax is not None and syntax.is_transfer_syntax and syntax.is_deflated:
        return dcmread(path)
    return path


def transfer_syntax_name(header: Dataset) -> str:
    """'JPEG-LS Lossless Image Compression [1.2.840.10008.1.2.4.80]' or 'unknown ...'."""
    syntax = _syntax(header)
    if syntax is None:
        return "unknown transfer syntax"
    return f"{syntax.name} [{syntax}]" if syntax.is_transfer_syntax else str(syntax)


def without_pixel_data(header: Dataset) -> Dataset:
    """The header itself when it has no pixel data, else a copy without it (file meta kept)."""
    if "PixelData" not in header:
        return header
    # iterating a Dataset yields elements; keys() gives tags without decoding raw elements
    tags = [tag for tag in header.keys() if tag != PIXEL_DATA_TAG]  # noqa: SIM118
    stripped = Dataset({tag: header.get_item(tag) for tag in tags})
    meta = getattr(header, "file_meta", None)
    if meta is not None:
        stripped.file_meta = meta
    return stripped
