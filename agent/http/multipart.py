"""An incremental parser of ``multipart/related`` bodies (RFC 2387, framing of RFC 2046 5.1).

Feed it the body in chunks as they arrive; it hands back each part once its closing delimiter
is seen, so only one part is held in memory at a time. Preamble and epilogue are skipped;
delimiters may end in CRLF or a bare LF, with transport padding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from email.message import Message


class MultipartError(ValueError):
    """The body or its Content-Type is not a well-formed multipart message."""


@dataclass
class Part:
    """One body part: lower-cased header names, and the content bytes."""

    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    @property
    def media_type(self) -> str | None:
        """The part's media type (lower case, without parameters), or None if unstated."""
        value = self.headers.get("content-type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class MultipartType:
    """A parsed ``Content-Type`` of a multipart request."""

    media_type: str
    boundary: str
    type: str | None  # the ``type`` parameter of multipart/related, lower case


def parse_content_type(value: str | None) -> MultipartType:
    """Read the media type, ``boundary`` and ``type`` parameters of a Content-Type header.

    Raises
    ------
    MultipartError
        No Content-Type, or a multipart type without a boundary.
    """
    if not value:
        raise MultipartError("the request has no Content-Type")
    message = Message()
    message["content-type"] = value
    media_type = message.get_content_type().lower()
    boundary = message.get_param("boundary")
    related_type = message.get_param("type")
    if media_type.startswith("multipart/") and not isinstance(boundary, str):
        raise MultipartError("the multipart Content-Type has no boundary parameter")
    if isinstance(boundary, str) and not 1 <= len(boundary) <= 200:
        raise MultipartError("the multipart boundary must be 1 to 200 characters")
    return MultipartType(
        media_type=media_type,
        boundary=boundary if isinstance(boundary, str) else "",
        type=related_type.strip().lower() if isinstance(related_type, str) else None,
    )


class _State(enum.Enum):
    PREAMBLE = 1
    AFTER_DELIMITER = 2
    PART = 3
    EPILOGUE = 4


def _split_headers(raw: bytes) -> Part:
    """Split a part's bytes into its header block and content."""
    if not raw:
        return Part({}, b"")
    if raw.startswith(b"\r\n"):
        return Part({}, raw[2:])
    if raw.startswith(b"\n"):
        return Part({}, raw[1:])
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf == -1 and lf == -1:
        raise MultipartError("a body part has no blank line after its headers")
    if crlf != -1 and (lf == -1 or crlf < lf):
        head, content = raw[:crlf], raw[crlf + 4 :]
    else:
        head, content = raw[:lf], raw[lf + 2 :]
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        if line[:1] in (" ", "\t") and headers:  # folded continuation of the previous header
            last = next(reversed(headers))
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, content)


class MultipartParser:
    """Incremental splitter of a multipart body into :class:`Part` objects.

    Parameters
    ----------
    boundary
        The ``boundary`` parameter of the request's Content-Type.
    max_part_bytes
        A part larger than this raises :class:`MultipartError` (protects memory).
    """

    def __init__(self, boundary: str, *, max_part_bytes: int = 2**31) -> None:
        self._dash = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\n" + self._dash  # preceded by an optional CR
        self._max = max_part_bytes
        self._buffer = bytearray()
        self._part = bytearray()
        self._state = _State.PREAMBLE
        self.parts_seen = 0

    @property
    def finished(self) -> bool:
        """True once the close delimiter (``--boundary--``) was read."""
        return self._state is _State.EPILOGUE

    def feed(self, chunk: bytes) -> list[Part]:
        """Take the next chunk of the body; return the parts it completed."""
        if self._state is _State.EPILOGUE:
            return []
        self._buffer += chunk
        done: list[Part] = []
        while self._step(done):
            pass
        return done

    def _step(self, done: list[Part]) -> bool:
        """Advance by one state; False when more input is needed (or the message ended)."""
        state = self._state
        if state is _State.PREAMBLE:
            return self._find_first_delimiter()
        if state is _State.AFTER_DELIMITER:
            return self._after_delimiter()
        if state is _State.PART:
            part = self._read_part()
            if part is None:
                return False
            done.append(part)
            return True
        self._buffer.clear()  # epilogue: ignored
        return False

    def close(self) -> None:
        """The body ended. Raises :class:`MultipartError` unless the message was complete."""
        if self._state is _State.PREAMBLE:
            raise MultipartError("the body holds no multipart delimiter")
        if self._state is not _State.EPILOGUE:
            raise MultipartError("the body ended before the closing multipart delimiter")

    def _find_first_delimiter(self) -> bool:
        buf = self._buffer
        start = 0
        while True:
            at = buf.find(self._dash, start)
            if at == -1:
                # keep a tail that could be the start of the delimiter
                keep = len(self._dash) + 1
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            if at == 0 or buf[at - 1 : at] == b"\n":
                del buf[: at + len(self._dash)]
                self._state = _State.AFTER_DELIMITER
                return True
            start = at + 1

    def _after_delimiter(self) -> bool:
        """After ``--boundary``: ``--`` closes the message, else skip padding to the line end."""
        buf = self._buffer
        if len(buf) < 2:
            return False
        if buf[:2] == b"--":
            self._state = _State.EPILOGUE
            return True
        newline = buf.find(b"\n")
        if newline == -1:
            if len(buf) > 1024:
                raise MultipartError("garbage after a multipart delimiter")
            return False
        if buf[:newline].strip(b" \t\r"):
            raise MultipartError("garbage after a multipart delimiter")
        del buf[: newline + 1]
        self._state = _State.PART
        return True

    def _read_part(self) -> Part | None:
        buf = self._buffer
        at = buf.find(self._delimiter)
        if at == -1:
            keep = len(self._delimiter) + 1  # a CR and a partial delimiter may be at the end
            if len(buf) > keep:
                self._part += buf[: len(buf) - keep]
                del buf[: len(buf) - keep]
            if len(self._part) > self._max:
                raise MultipartError(f"a body part is larger than {self._max} bytes")
            return None
        end = at - 1 if at > 0 and buf[at - 1 : at] == b"\r" else at
        self._part += buf[:end]
        del buf[: at + len(self._delimiter)]
        raw = bytes(self._part)
        self._part = bytearray()
        if len(raw) > self._max:
            raise MultipartError(f"a body part is larger than {self._max} bytes")
        self._state = _State.AFTER_DELIMITER
        self.parts_seen += 1
        return _split_headers(raw)
