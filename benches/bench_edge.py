"""What the edge checks cost per request (pytest-benchmark).

Run: .venv/bin/python -m pytest benches/bench_edge.py --benchmark-enable -p no:cacheprovider
Side by side: parsing a chat request alone, and with the checks every model request
now passes (json_scan for depth and NULs, check_model_request for the fields we act on).
"""

from __future__ import annotations

import orjson

from tollway._core import json_scan
from tollway.proxy.checks import check_model_request

CHAT = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. " * 8},
            {"role": "user", "content": "Plan three days in Lisbon with a modest budget, please. " * 4},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
    }
)
LARGE = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 1_000_000}]})


def test_parse_only(benchmark) -> None:
    benchmark(orjson.loads, CHAT)


def test_parse_with_edge_checks(benchmark) -> None:
    def checked() -> None:
        depth, _nul = json_scan(CHAT)
        assert depth == 7
        check_model_request(orjson.loads(CHAT))

    benchmark(checked)


def test_json_scan_1mb(benchmark) -> None:
    assert benchmark(json_scan, LARGE) == (3, False)
