"""The spending cap (the key's total and its windows), decided before any upstream call.

A request may start only if the key can still afford its input (estimated from
above) plus one output token. It then holds ``input + worst-case output``, the
worst case being ``max_tokens`` (or the model's maximum output when absent),
lowered to what the key can still afford: in that case the request is forwarded
with ``max_tokens`` clamped to the affordable count instead of being refused.

All of it is one atomic reservation in the ledger, so any number of concurrent
requests on a key can never together hold more than its cap. After the response
the hold is settled to the actual cost and the rest goes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from tollway._core import Hold
from tollway.config import ModelRoute
from tollway.http.core import HTTPError
from tollway.ledger import Ledger

CAP_MESSAGE = "this API key has reached its spending cap"


@dataclass(slots=True)
class CapDecision:
    hold: Hold
    clamp_to: Optional[int]  # forward with max_tokens lowered to this, or None


def worst_case(route: ModelRoute, input_estimate: int, requested_max_tokens: Optional[int]) -> tuple[int, int]:
    """(the input's price, the call's worst case: the input and all the output it may ask for),
    in micro-USD rounded up: what a call holds when its budgets allow."""
    pricing = route.pricing
    assert pricing is not None
    worst_output = requested_max_tokens if requested_max_tokens is not None else route.max_output_tokens
    input_hold = pricing.cost_micros_ceil(input_estimate, 0)
    return input_hold, input_hold + pricing.cost_micros_ceil(0, worst_output)


def decide_hold(
    ledger: Ledger,
    budgets: Union[str, Sequence[str]],
    route: ModelRoute,
    input_estimate: int,
    requested_max_tokens: Optional[int],
    min_output_tokens: int = 1,
    explain: Optional[Callable[[str], str]] = None,
    refusal: Optional[Callable[[str, int], Optional[HTTPError]]] = None,
) -> CapDecision:
    """Hold on every budget of ``budgets`` (the key's total cap first, then its windows).

    ``min_output_tokens``: the smallest output limit the provider accepts; a key that
    cannot afford that many is refused (402) rather than sent a request the provider refuses.
    ``explain(budget_id)``: what to call an exhausted budget in the 402 (its window, its reset).
    ``refusal(budget_id, needed micros)``: the error for a budget that is not the key's own
    (the account's wallet), or None for the key's 402."""
    pricing = route.pricing
    assert pricing is not None
    worst_output = requested_max_tokens if requested_max_tokens is not None else route.max_output_tokens
    input_hold, want = worst_case(route, input_estimate, requested_max_tokens)
    one_token = pricing.cost_micros_ceil(0, 1)
    hold = ledger.reserve_all([budgets] if isinstance(budgets, str) else budgets, input_hold + one_token, want)
    if isinstance(hold, str):
        error = refusal(hold, input_hold + one_token) if refusal is not None else None
        if error is not None:
            raise error
        spent, reserved, cap = ledger.snapshot(hold)
        what = explain(hold) if explain is not None else "spending cap"
        raise HTTPError(
            402,
            f"this API key has reached its {what} (limit {cap} micro-USD, spent {spent}, held by requests in "
            f"flight {reserved}; this request needs at least {input_hold + one_token})",
            code="spend_cap_reached",
        )
    clamp_to = None
    if hold.micros < want:
        affordable = pricing.affordable_output_tokens(hold.micros - input_hold)
        if affordable < worst_output:
            clamp_to = max(1, affordable)
            if clamp_to < min_output_tokens:
                hold.release()
                raise HTTPError(
                    402,
                    f"{CAP_MESSAGE} (it can pay for {clamp_to} output tokens; this model's provider needs "
                    f"max output tokens of at least {min_output_tokens})",
                    code="spend_cap_reached",
                )
    return CapDecision(hold, clamp_to)
