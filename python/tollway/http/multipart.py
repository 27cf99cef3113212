"""``multipart/form-data`` request bodies (a file upload: POST /v1/files), parsed with
python-multipart from the body already read (its size bounded by TOLLWAY_MAX_BODY_MB)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tollway.http.core import HTTPError, Request

MAX_PARTS = 16


@dataclass(slots=True)
class Part:
    name: str
    filename: Optional[str]
    content_type: Optional[str]
    data: bytes


def form_parts(request: Request) -> dict[str, Part]:
    """The form's parts by field name (the first of each name); a 400 for a body that is
    not multipart/form-data or does not parse."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HTTPError(400, "the request body must be multipart/form-data (with a boundary)")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.append(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.append(chunk[start:end])

    def on_header_end() -> None:
        headers[b"".join(field).lower()] = b"".join(value)
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.append(chunk[start:end])

    def on_part_end() -> None:
        if len(parts) >= MAX_PARTS:
            raise HTTPError(400, f"the form has more than {MAX_PARTS} parts")
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name")
        if name is None:
            raise HTTPError(400, "a form part has no name (Content-Disposition: form-data; name=...)")
        filename = disposition.get(b"filename")
        ctype = headers.get(b"content-type")
        parts.append(
            Part(
                name.decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None,
                ctype.decode("latin-1") if ctype is not None else None,
                b"".join(data),
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(request.body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise HTTPError(400, f"the multipart/form-data body does not parse: {exc}") from None
    found: dict[str, Part] = {}
    for part in parts:
        found.setdefault(part.name, part)
    return found
