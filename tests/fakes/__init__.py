"""Fake OpenAI/Anthropic upstreams for tests and load benchmarks (see README.md)."""

from .runner import FakeServer, start_fake

__all__ = ["FakeServer", "start_fake"]
