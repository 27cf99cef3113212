"""Key policy on the call path: which models a key may call, its rate limits, its budgets.

``Policy.admit`` is the one decision before a model call goes upstream: the key's
rate limits (and its model's) first, then one atomic hold on its total cap and its
windows (``policy.caps.decide_hold``). A refusal is a 429 (rate) or a 402 (money)
and nothing is left held; a call admitted carries its hold and its rate permit, both
settled when the call ends.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Callable, Optional

from tollway.config import ModelRoute
from tollway.http.core import HTTPError
from tollway.keys.auth import wall_clock_ms
from tollway.keys.store import ApiKey
from tollway.ledger import HoldLike, Ledger
from tollway.policy.budgets import KeyBudgets
from tollway.policy.caps import CapDecision, decide_hold
from tollway.policy.rate_headers import headers_for
from tollway.policy.ratelimit import Permit, RateLimiter, RateLimits, Refusal
from tollway.policy.windows import adjective, iso
from tollway.wallet.service import PREFIX as WALLET_PREFIX


def policy_clock() -> Callable[[], int]:
    """Unix ms: the wall clock, shifted by TOLLWAY_CLOCK_OFFSET_MS when set (read once: to
    try a month's end or a key's expiry against a running gateway without waiting for it)."""
    offset = int(os.environ.get("TOLLWAY_CLOCK_OFFSET_MS") or 0)
    if not offset:
        return wall_clock_ms
    return lambda: time.time_ns() // 1_000_000 + offset


@lru_cache(maxsize=4096)
def _allowed(patterns: tuple[str, ...], name: str) -> bool:
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def model_allowed(key: ApiKey, name: str) -> bool:
    patterns = key.allowed_models
    return patterns is None or _allowed(tuple(patterns), name)


def check_model(key: ApiKey, name: str) -> None:
    if not model_allowed(key, name):
        raise HTTPError(403, f"this API key may not use the model {name!r}", code="model_not_allowed", param="model")


def _limits(values: Optional[dict[str, int]]) -> Optional[RateLimits]:
    if not values:
        return None
    return RateLimits(values.get("rpm"), values.get("tpm"), values.get("max_parallel"))


class Prepaid:
    """Money held before the call (a queued job's hold), handed to the call that runs it: the
    first admission in the context releases it in the same synchronous step as it reserves
    its own hold, so nothing else can take that money in between (README, "Jobs")."""

    __slots__ = ("hold",)

    def __init__(self, hold: Optional[HoldLike]) -> None:
        self.hold = hold

    def take(self) -> Optional[HoldLike]:
        hold, self.hold = self.hold, None
        return hold


PREPAID: ContextVar[Optional[Prepaid]] = ContextVar("tollway_prepaid", default=None)


@dataclass(slots=True)
class Admission:
    hold: HoldLike
    clamp_to: Optional[int]
    permit: Optional[Permit]
    started_at: int  # ms, the policy clock: the windows the call is charged to


class _KeyRates:
    """A key's rate buckets, parsed once per key object."""

    __slots__ = ("key", "own", "models", "by_model")

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        own = _limits(key.rate_limits)
        self.own = [(key.id, own)] if own is not None else []
        self.models = [(pattern, _limits(v)) for pattern, v in key.model_limits.items()]
        self.by_model: dict[str, list[tuple[str, RateLimits]]] = {}

    def buckets(self, model: str) -> list[tuple[str, RateLimits]]:
        found = self.by_model.get(model)
        if found is None:
            found = list(self.own)
            exact = [(p, v) for p, v in self.models if p == model]
            for pattern, limits in exact or [(p, v) for p, v in self.models if fnmatchcase(model, p)][:1]:
                if limits is not None:
                    found.append((f"{self.key.id}|{pattern}", limits))
            self.by_model[model] = found
        return found


class Policy:
    def __init__(self, ledger: Ledger, budgets: KeyBudgets, limiter: RateLimiter, clock: Callable[[], int]) -> None:
        self.ledger = ledger
        self.budgets = budgets
        self.limiter = limiter
        self.clock = clock
        self._rates: dict[str, _KeyRates] = {}
        # Told of each refusal by one of the key's own budgets (key, budget id): the
        # key.cap_exceeded event (tollway.events.sources). On the event loop: keep it cheap.
        self.cap_refused: list[Callable[[ApiKey, str], None]] = []

    def rate_buckets(self, key: ApiKey, model: str) -> list[tuple[str, RateLimits]]:
        rates = self._rates.get(key.id)
        if rates is None or rates.key is not key:
            if not key.rate_limits and not key.model_limits:
                return []
            rates = self._rates[key.id] = _KeyRates(key)
        return rates.buckets(model)

    def rate_state_buckets(self, key: ApiKey) -> list[tuple[Optional[str], str, RateLimits]]:
        """(model pattern or None for the key's own, bucket id, limits) of every rate bucket of ``key``."""
        out: list[tuple[Optional[str], str, RateLimits]] = []
        own = _limits(key.rate_limits)
        if own is not None:
            out.append((None, key.id, own))
        for pattern, values in key.model_limits.items():
            limits = _limits(values)
            if limits is not None:
                out.append((pattern, f"{key.id}|{pattern}", limits))
        return out

    def admit(
        self,
        key: ApiKey,
        route: ModelRoute,
        input_estimate: int,
        requested_max_tokens: Optional[int],
        min_output_tokens: int = 1,
    ) -> Admission:
        now = self.clock()
        permit = None
        buckets = self.rate_buckets(key, route.name) if (key.rate_limits or key.model_limits) else ()
        if buckets:
            worst = requested_max_tokens if requested_max_tokens is not None else route.max_output_tokens
            got = self.limiter.acquire(buckets, input_estimate + worst, now)
            if isinstance(got, Refusal):
                raise rate_limited(got, now)
            permit = got
        try:
            prepaid = PREPAID.get()
            held = prepaid.take() if prepaid is not None else None
            if held is not None:
                held.release()  # the job's hold: this call's own hold takes its place now
            decision = self.hold(key, route, input_estimate, requested_max_tokens, min_output_tokens, now)
        except BaseException:
            if permit is not None:
                permit.release()  # never went upstream: as if it had not asked
            raise
        return Admission(decision.hold, decision.clamp_to, permit, now)

    def hold(
        self,
        key: ApiKey,
        route: ModelRoute,
        input_estimate: int,
        requested_max_tokens: Optional[int],
        min_output_tokens: int = 1,
        now: Optional[int] = None,
    ) -> CapDecision:
        """The hold on the key's cap, its windows and its wallet (402 when it cannot afford the
        call), with no rate limit: a call's (``admit``) or a queued job's (tollway.jobs). A refusal
        by one of the key's own budgets is told to ``cap_refused`` (the key.cap_exceeded event)."""
        refused: list[str] = []

        def explain(budget: str) -> str:
            refused.append(budget)
            return self.explain(key, budget)

        try:
            return decide_hold(
                self.ledger,
                self.budgets.budget_ids(key, self.clock() if now is None else now),
                route,
                input_estimate,
                requested_max_tokens,
                min_output_tokens,
                explain,
                self.refusal,
            )
        except BaseException:
            for budget in refused:
                for tell in self.cap_refused:
                    tell(key, budget)
            raise

    def refusal(self, budget: str, needed: int) -> Optional[HTTPError]:
        """The 402 of a budget shared by the account's keys (its wallet), None for the key's own."""
        if not budget.startswith(WALLET_PREFIX):
            return None
        spent, reserved, paid_in = self.ledger.snapshot(budget)
        return HTTPError(
            402,
            f"the account's prepaid balance is too low for this request (balance {(paid_in or 0) - spent} micro-USD, "
            f"held by requests in flight {reserved}; this request needs at least {needed}): top up the wallet",
            code="insufficient_balance",
        )

    def explain(self, key: ApiKey, budget: str) -> str:
        period, resets = self.budgets.window_of(key.id, budget)
        if resets is None:
            return "spending cap"
        return f"{adjective(period)} spending limit, which resets at {iso(resets)}"


def rate_limited(refusal: Refusal, now: int) -> HTTPError:
    what = {"requests": "requests per minute", "tokens": "tokens per minute", "parallel": "requests in flight"}
    return HTTPError(
        429,
        f"rate limit reached: this API key allows {refusal.limit_value} {what.get(refusal.limit, refusal.limit)}"
        f"{' for this model' if '|' in refusal.bucket else ''}; retry after {refusal.retry_after_ms} ms",
        code="rate_limit_exceeded",
        shaped_headers=lambda shape: headers_for(shape, refusal, now),
    )
