"""A small JPEG Lossless encoder, Process 14 with selection value 1 (ITU T.81 Annex H).

pydicom has decoders but no encoder for JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), which is
what many PACS store. One component, point transform 0, one fixed Huffman table (the standard
DC luminance table extended to categories 12-16); entropy coding is vectorised with numpy.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

# Code lengths for difference categories 0..16 (Annex K.3 table K.3, extended).
_LENGTHS = np.array([2, 3, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], dtype=np.int64)


def _canonical_codes(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Huffman codes assigned in order of length then symbol (Annex C)."""
    order = np.argsort(lengths, kind="stable")
    codes = np.zeros_like(lengths)
    code, prev = 0, int(lengths[order[0]])
    for i, sym in enumerate(order):
        ln = int(lengths[sym])
        if i:
            code = (code + 1) << (ln - prev)
        prev = ln
        codes[sym] = code
    return codes


_CODES = _canonical_codes(_LENGTHS)


def _dht() -> bytes:
    counts = [int(np.count_nonzero(np.equal(_LENGTHS, n))) for n in range(1, 17)]
    symbols = bytes(int(s) for s in np.argsort(_LENGTHS, kind="stable"))
    body = bytes([0x00]) + bytes(counts) + symbols
    return b"\xff\xc4" + struct.pack(">H", len(body) + 2) + body


def encode_sv1(frame: npt.NDArray[np.integer], precision: int) -> bytes:
    """Encode one greyscale frame of unsigned values below ``2**precision`` (2..16 bits)."""
    if frame.ndim != 2 or not 2 <= precision <= 16:
        raise ValueError("encode_sv1 takes one 2D frame and a precision of 2 to 16 bits")
    img = frame.astype(np.int64)
    if img.min() < 0 or img.max() >= (1 << precision):
        raise ValueError(f"pixel values do not fit in {precision} bits")
    rows, cols = img.shape
    pred = np.empty_like(img)
    pred[:, 1:] = img[:, :-1]  # SV1: the sample to the left
    pred[1:, 0] = img[:-1, 0]  # first column: the sample above
    pred[0, 0] = 1 << (precision - 1)
    diff = (img - pred).reshape(-1)
    diff = ((diff + 32768) % 65536) - 32768  # modulo 2**16 (H.1.2.1)
    absd = np.abs(diff)
    ssss = np.frexp(absd.astype(np.float64))[1].astype(np.int64)
    extra = np.where(diff >= 0, diff, diff + (np.int64(1) << ssss) - 1) & (
        (np.int64(1) << ssss) - 1
    )
    extra = np.where(ssss == 16, 0, extra)  # category 16 has no extra bits
    nbits_extra = np.where(ssss == 16, 0, ssss)
    value = (_CODES[ssss] << nbits_extra) | extra
    length = _LENGTHS[ssss] + nbits_extra
    total = int(length.sum())
    nbytes = (total + 7) // 8
    bits = np.ones(nbytes * 8, dtype=np.uint8)  # padding bits are ones (F.1.2.3)
    start = np.cumsum(length) - length
    for k in range(int(length.max())):
        sel = length > k
        bits[start[sel] + k] = (value[sel] >> (length[sel] - 1 - k)) & 1
    data = np.packbits(bits)
    ff = np.flatnonzero(data == 0xFF)
    if ff.size:
        data = np.insert(data, ff + 1, 0)  # byte stuffing
    sof = b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, rows, cols, 1) + bytes([1, 0x11, 0])
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + _dht() + sos + data.tobytes() + b"\xff\xd9"
