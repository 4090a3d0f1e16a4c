"""``multipart/related`` for DICOMweb (RFC 2387): media-type parameters, Accept headers, parsing and writing."""

from __future__ import annotations

import mmap
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class MultipartError(ValueError):
    """A request body that is not the multipart message its Content-Type announces."""


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header (or a Content-Type): ``type/subtype`` and its parameters."""

    media_type: str
    params: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        """A parameter's value (case-insensitive name)."""
        return self.params.get(name.lower(), default)


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside double quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> MediaRange:
    """Parse ``type/subtype; name=value; ...`` (quoted values unquoted, names lower-cased)."""
    head, *params = _split(text, ";")
    values: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[name.strip().lower()] = value
    return MediaRange(head.strip().lower(), values)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, in the order sent (``*/*`` when there is none)."""
    if not header or not header.strip():
        return [MediaRange("*/*", {})]
    ranges = [parse_media_type(part) for part in _split(header, ",") if part.strip()]

    # Highest quality first; the sort is stable, so equal qualities keep the client's order.
    def quality(media: MediaRange) -> float:
        try:
            return float(media.get("q", "1"))
        except ValueError:
            return 1.0

    return sorted((m for m in ranges if quality(m) > 0), key=quality, reverse=True)


def parse(body: bytes | mmap.mmap, boundary: str) -> list[tuple[dict[str, str], memoryview]]:
    """The parts of a multipart body: each part's headers (lower-case names) and content.

    The contents are views of ``body`` (no copy): the boundary is found with ``find``, which works on a body
    mapped from a file as well.

    Raises
    ------
    MultipartError
        When the boundary never occurs, a part has no header section, or the closing delimiter is missing.
    """
    # RFC 2046 allows 70 characters; Orthanc sends 73: up to 200 are accepted.
    if not boundary or len(boundary) > 200:
        raise MultipartError("the Content-Type has no valid boundary parameter")
    marker = b"--" + boundary.encode("latin-1")
    view = memoryview(body)
    first = body.find(marker)
    if first < 0:
        raise MultipartError("the body does not contain the boundary of its Content-Type")
    parts: list[tuple[dict[str, str], memoryview]] = []
    position = first + len(marker)
    delimiter = b"\r\n" + marker
    while True:
        if body[position : position + 2] == b"--":
            return parts  # the close delimiter
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            break
        start = line_end + 2
        headers: dict[str, str] = {}
        if body[start : start + 2] == b"\r\n":
            content_start = start + 2  # a part without headers
        else:
            header_end = body.find(b"\r\n\r\n", start)
            if header_end < 0:
                raise MultipartError(f"part {len(parts) + 1} has no end to its header section")
            for line in body[start:header_end].split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if not sep:
                    raise MultipartError(f"part {len(parts) + 1} has a malformed header line")
                headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
            content_start = header_end + 4
        end = body.find(delimiter, content_start)
        if end < 0:
            break
        parts.append((headers, view[content_start:end]))
        position = end + len(delimiter)
    raise MultipartError("the multipart body is truncated: its closing boundary is missing")


def new_boundary() -> str:
    """A boundary that will not occur in the parts (random, 32 hex digits)."""
    return secrets.token_hex(16)


def part_head(content_type: str, length: int, boundary: str) -> bytes:
    """The delimiter and headers that open one part."""
    return (
        b"--"
        + boundary.encode("ascii")
        + b"\r\nContent-Type: "
        + content_type.encode("latin-1")
        + b"\r\nContent-Length: "
        + str(length).encode("ascii")
        + b"\r\n\r\n"
    )


def closing(boundary: str) -> bytes:
    """The close delimiter."""
    return b"--" + boundary.encode("ascii") + b"--\r\n"


def body_length(parts: Iterable[tuple[str, int]], boundary: str) -> int:
    """The length of the body :func:`write` makes of parts of these content types and lengths."""
    return sum(len(part_head(ctype, size, boundary)) + size + 2 for ctype, size in parts) + len(closing(boundary))


def write(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """Yield a multipart body part by part: each part is ``(content type, bytes)``."""
    for content_type, data in parts:
        yield part_head(content_type, len(data), boundary)
        yield data
        yield b"\r\n"
    yield closing(boundary)
