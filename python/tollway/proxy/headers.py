"""Which provider response headers reach the client."""

from __future__ import annotations

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "date",
    "server",
}


def response_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in upstream:
        if name in _HOP_BY_HOP:
            continue
        if name == "x-request-id":  # ours takes that name; keep the provider's too
            name = "x-upstream-request-id"
        out.append((name, value))
    return out
