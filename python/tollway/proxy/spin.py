"""Waiting for a fast upstream without going to sleep.

The upstream client runs on the extension's runtime thread. When the event loop
awaits a call, the loop thread sleeps and the runtime thread wakes it once the
answer is in: a thread wake-up each way. On a VM whose idle vCPUs halt, each
costs 0.1 ms or more, a large share of the gateway's added latency when the
upstream itself answers within a millisecond (a local model server, a cache,
the benchmark's fake upstream); for a real LLM call of a few hundred ms it is
noise.

So, like an adaptive mutex or the kernel's busy-poll sockets, the loop thread
polls for the answer (GIL released) instead of sleeping, but only when all of
these hold:

* this is the only request the gateway is serving (nothing else for the loop
  to run, so no one waits while it polls);
* the provider's recent answers came within half the bound (an exponential
  moving average of the observed call times), so the poll usually succeeds: a
  slow provider never triggers it;
* at most ``TOLLWAY_SPIN_WAIT_US`` microseconds (default 2000; 0 turns it off),
  after which the call is awaited as usual.
"""

from __future__ import annotations

from typing import Callable, Protocol


class SpinClient(Protocol):
    def spin_wait(self, max_seconds: float) -> bool: ...


# Weight of the newest observation in the moving average of call times.
ALPHA = 0.2


class SpinWait:
    """Per-provider decision to poll a fast upstream's answer instead of sleeping."""

    __slots__ = ("max_wait", "_avg")

    def __init__(self, max_wait_us: int) -> None:
        self.max_wait = max_wait_us / 1e6
        self._avg: dict[str, float] = {}

    def average(self, provider: str) -> float | None:
        """The moving average of recent call times to ``provider`` in seconds (None before the first)."""
        return self._avg.get(provider)

    def observe(self, provider: str, seconds: float) -> None:
        avg = self._avg.get(provider)
        self._avg[provider] = seconds if avg is None else avg + ALPHA * (seconds - avg)

    def worth_it(self, provider: str) -> bool:
        """Do the provider's calls usually finish well within the bound (on average in half of it)?"""
        avg = self._avg.get(provider)
        return avg is not None and avg <= self.max_wait / 2

    def poll(self, provider: str, client: SpinClient, alone: Callable[[], bool]) -> None:
        """Right after a call to ``provider`` was started on ``client``: poll for its answer when worth it.

        ``alone()`` says whether this is the only request being served. Whatever
        happens the caller then awaits the call as usual (already resolved when
        the poll caught it).
        """
        if self.max_wait > 0 and self.worth_it(provider) and alone():
            client.spin_wait(self.max_wait)
