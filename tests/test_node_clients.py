"""Popular JavaScript clients in their default mode, against the gateway.

The Vercel AI SDK's ``openai(id)`` speaks the Responses API: ``generateText`` and
``streamText`` go through POST /v1/responses, capped and metered. The official
``openai`` package drives the same route (create, a stream, a stored response). The packages are
installed with npm into tests/node/node_modules (package-lock.json pins them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, fake_requests

NODE_DIR = Path(__file__).parent / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed for the JavaScript client tests (apt-get install nodejs npm)",
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if not all((NODE_DIR / "node_modules" / name).exists() for name in ("@ai-sdk/openai", "ai", "openai")):
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")
    return NODE_DIR / "node_modules"


def test_vercel_ai_sdk_default_openai_provider(gateway: Gateway, fake, node_modules: Path) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    done = subprocess.run(
        ["node", "ai_sdk.mjs", gateway.url + "/v1", secret, "test-gpt", secret[-8:]],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["generated"]["text"] == "w0 w1 w2 w3 w4"
    assert out["streamed"]["text"] == "w0 w1 w2 w3 w4 w5 w6"
    assert out["streamed"]["usage"]["outputTokens"] == 7
    ours = [q for q in fake_requests(fake) if secret[-8:] in json.dumps(q["body"])]
    assert [q["path"] for q in ours] == ["/v1/responses", "/v1/responses"]  # the SDK's default: the Responses API
    info = gateway.wait_settled(key_id)
    events = gateway.key_usage(key_id)["events"]
    assert sorted((e["stream"], e["output_tokens"], e["estimated"]) for e in events) == [
        (False, 5, False),
        (True, 7, False),
    ]
    assert sum(e["cost_micros"] for e in events) == info["spent_micros"] > 0


def test_official_openai_node_package_on_responses(gateway: Gateway, fake, node_modules: Path) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    done = subprocess.run(
        ["node", "openai_responses.mjs", gateway.url + "/v1", secret, secret[-8:]],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"] == "w0 w1 w2"  # an Anthropic model, translated
    assert out["second"]["text"] == "w0 w1" and out["second"]["stored"] == "w0 w1"
    assert out["second"]["previous"] is not None  # passed through natively, still chained to ours
    assert out["streamed"]["text"] == "w0 w1 w2 w3" and out["streamed"]["usage"]["output_tokens"] == 4
    assert out["notFound"] == {"status": 404, "isNotFound": True}
    ours = [q["path"] for q in fake_requests(fake) if secret[-8:] in json.dumps(q["body"])]
    assert ours == ["/v1/messages", "/v1/responses", "/v1/responses"]
    assert gateway.wait_settled(key_id)["spent_micros"] > 0


def test_official_openai_node_package_on_batches(gateway: Gateway, node_modules: Path) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    done = subprocess.run(
        ["node", "openai_batches.mjs", gateway.url + "/v1", secret],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed" and out["counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert out["output"] == [["n1", 200, "w0 w1"], ["n3", 200, "w0 w1 w2"]]
    assert out["errors"] == [["n2", 400]]
    assert out["listed"] == [out["id"]]  # the SDK's auto-paging over the key's one batch
    assert gateway.wait_settled(key_id)["spent_micros"] == 10 * 5
