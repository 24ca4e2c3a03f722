"""Is a received data set whole? A structural walk over its encoded bytes (PS3.5 7.1, 7.5, A.4).

pydicom reads a value that is shorter than its declared length without complaint, and the
ingest parses only up to the pixel data; so a data set cut short in transit (a truncated file,
an element that claims 4 GB) would otherwise be acknowledged. This walk checks that every
element, item and fragment fits in the bytes received and that every undefined-length sequence,
item and encapsulated pixel data is closed by its delimiter. It reads no values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"SV",
    b"UV",
}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_UINT16 = struct.Struct("<H")
_UINT32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")


class IncompleteDatasetError(ValueError):
    """The data set is cut short or its nesting is broken; the message says where."""


@dataclass
class _Open:
    """A container being walked: a sequence, an item, or encapsulated pixel data."""

    kind: str  # "sq", "item", "frags"
    end: int | None  # None: undefined length, closed by a delimiter
    explicit: bool


def dataset_offset(part10: bytes) -> int:
    """Where the data set starts in a Part 10 file (after the preamble and file meta).

    Raises
    ------
    IncompleteDatasetError
        No "DICM" prefix, or the file meta is cut short.
    """
    if part10[128:132] != b"DICM":
        raise IncompleteDatasetError("no DICOM Part 10 prefix")
    pos = 132
    while pos + 8 <= len(part10):
        group, _ = _TAG.unpack_from(part10, pos)
        if group != 0x0002:
            return pos
        vr = part10[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(part10):
                break
            pos += 12 + _UINT32.unpack_from(part10, pos + 8)[0]
        else:
            pos += 8 + _UINT16.unpack_from(part10, pos + 6)[0]
    if pos == len(part10):
        return pos
    raise IncompleteDatasetError("the file meta information is cut short")


def check_complete(part10: bytes, transfer_syntax: str) -> None:
    """Raise :class:`IncompleteDatasetError` unless every element of the data set fits in
    ``part10`` and every undefined length is closed. Deflated and big-endian data sets are not
    walked (their bytes are not the elements)."""
    if transfer_syntax in _DEFLATED or transfer_syntax == _EXPLICIT_BE:
        return
    _walk(part10, dataset_offset(part10), transfer_syntax != _IMPLICIT_LE)


def _walk(data: bytes, pos: int, explicit: bool) -> None:
    size = len(data)
    stack: list[_Open] = []
    while True:
        while stack and stack[-1].end is not None and pos == stack[-1].end:
            stack.pop()
        limit = next((o.end for o in reversed(stack) if o.end is not None), size)
        if pos > limit:
            raise IncompleteDatasetError(f"an element runs past its container at byte {pos}")
        if pos == size:
            if stack:
                raise IncompleteDatasetError(
                    f"the data set ends inside an unfinished {stack[-1].kind} (cut short)"
                )
            return
        if size - pos < 8:
            raise IncompleteDatasetError(f"the data set ends inside an element header at {pos}")
        mode = stack[-1].explicit if stack else explicit
        group, element = _TAG.unpack_from(data, pos)
        if group == 0xFFFE:
            length = _UINT32.unpack_from(data, pos + 4)[0]
            pos += 8
            top = stack[-1] if stack else None
            if element == _ITEM:
                if top is None or top.kind == "item":
                    raise IncompleteDatasetError(f"an item outside a sequence at byte {pos - 8}")
                if top.kind == "frags":
                    if length == _UNDEFINED or pos + length > limit:
                        raise IncompleteDatasetError(f"a pixel data fragment is cut short at {pos}")
                    pos += length
                elif length == _UNDEFINED:
                    stack.append(_Open("item", None, top.explicit))
                else:
                    if pos + length > limit:
                        raise IncompleteDatasetError(f"an item runs past the data at byte {pos}")
                    stack.append(_Open("item", pos + length, top.explicit))
            elif element == _ITEM_END:
                if top is None or top.kind != "item" or top.end is not None:
                    raise IncompleteDatasetError(f"a stray item delimiter at byte {pos - 8}")
                stack.pop()
            elif element == _SEQUENCE_END:
                if top is None or top.kind == "item" or top.end is not None:
                    raise IncompleteDatasetError(f"a stray sequence delimiter at byte {pos - 8}")
                stack.pop()
            else:
                raise IncompleteDatasetError(f"an unknown delimiter tag at byte {pos - 8}")
            continue
        if mode:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                if size - pos < 12:
                    raise IncompleteDatasetError(f"the data set ends inside an element at {pos}")
                length = _UINT32.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                length = _UINT16.unpack_from(data, pos + 6)[0]
                pos += 8
        else:
            vr = b""
            length = _UINT32.unpack_from(data, pos + 4)[0]
            pos += 8
        if length == _UNDEFINED:
            if (group, element) in _PIXEL_TAGS and vr != b"SQ":
                stack.append(_Open("frags", None, mode))
            else:  # a sequence (an undefined-length UN holds implicit VR items)
                stack.append(_Open("sq", None, mode and vr != b"UN"))
            continue
        if pos + length > limit:
            raise IncompleteDatasetError(
                f"element ({group:04X},{element:04X}) declares {length} bytes but only "
                f"{max(limit - pos, 0)} follow (cut short)"
            )
        pos += length
