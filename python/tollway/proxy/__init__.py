"""The native provider routes: caps before the upstream call, metering after it."""

from tollway.policy.caps import CAP_MESSAGE, CapDecision, decide_hold
from tollway.proxy.handler import Proxy

__all__ = ["CAP_MESSAGE", "CapDecision", "Proxy", "decide_hold"]
