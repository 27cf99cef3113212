"""The one settlement rule, for streams and non-streams alike.

A call holds money before it goes upstream; when it ends, its hold is settled to
what it cost (``tollway._core.settled_cost``, the rule itself; the Rust stream
applies the same function to its outcome):

- usage present (the provider reported it): the priced usage, in full, even past
  the hold (the provider bills it; the overspend is recorded, never hidden);
- usage missing (a body without usage, a stream cut before its usage, a client gone
  before the end): our estimate (the input estimate, and the output the call was
  seen to produce), marked ``estimated`` on the usage event, and never more than
  the hold: an estimate does not bill past what the request could spend;
- a call that produced nothing billable (an upstream error status, a failure before
  any response) releases its hold instead (``Hold.release``).
"""

from __future__ import annotations

from typing import Protocol

from tollway._core import settled_cost


class Settleable(Protocol):
    micros: int

    def settle(self, actual_micros: int) -> bool: ...


def settle(hold: Settleable, priced_micros: int, estimated: bool) -> int:
    """Settle ``hold`` to what the call cost by the rule; return the micros recorded as spent."""
    cost = settled_cost(priced_micros, estimated, hold.micros)
    hold.settle(cost)
    return cost


__all__ = ["settle", "settled_cost"]
