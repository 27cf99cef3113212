"""Tollway: a self-hosted backend for AI apps.

Per-user keys with hard spend caps, metering in integer micro-dollars, and the
native OpenAI and Anthropic HTTP shapes, with the hot path in Rust (``tollway._core``).
"""

__version__ = "0.1.0"
