"""tollway._core pricing arithmetic and the spend ledger."""

from __future__ import annotations

import gc
import threading
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, getcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway._core import Hold, Ledger, Pricing

getcontext().prec = 100

USD_PER_M = 10**12  # atto per token for $1 per million tokens


def decimal_cost(p: Pricing, i: int, o: int, cr: int = 0, cw: int = 0) -> Decimal:
    atto = Decimal(i * p.input_atto + o * p.output_atto + cr * p.cache_read_atto + cw * p.cache_write_atto)
    return atto * (Decimal(10**6) + p.markup_ppm) / Decimal(10**6) / Decimal(10**12)


def test_pricing_fields_and_simple_costs():
    p = Pricing(
        3 * USD_PER_M, 15 * USD_PER_M, cache_read_atto=USD_PER_M * 3 // 10, cache_write_atto=USD_PER_M * 375 // 100
    )
    assert (p.input_atto, p.output_atto, p.markup_ppm) == (3 * USD_PER_M, 15 * USD_PER_M, 0)
    assert p.cost_micros(1_000_000, 0) == 3_000_000  # $3
    assert p.cost_micros(1000, 1000) == 18_000
    assert p.cost_micros(0, 0, 1_000_000, 1_000_000) == 300_000 + 3_750_000
    assert Pricing(0, 0).cost_micros(10**9, 10**9) == 0


def test_rounding_half_up_and_ceil():
    half = Pricing(USD_PER_M // 2, 0)  # 0.5 micro per token
    assert half.cost_micros(1, 0) == 1  # 0.5 rounds up
    assert half.cost_micros(3, 0) == 2  # 1.5 -> 2
    assert half.cost_micros_ceil(3, 0) == 2
    low = Pricing(USD_PER_M * 4 // 10, 0)  # 0.4 micro
    assert low.cost_micros(1, 0) == 0
    assert low.cost_micros_ceil(1, 0) == 1
    assert low.cost_micros_ceil(0, 0) == 0
    tiny = Pricing(1, 0)  # 1 atto per token
    assert tiny.cost_micros(499_999_999_999, 0) == 0
    assert tiny.cost_micros(500_000_000_000, 0) == 1
    assert tiny.cost_micros_ceil(1, 0) == 1


def test_markup():
    p = Pricing(10 * USD_PER_M, 30 * USD_PER_M, markup_ppm=250_000)  # +25 %
    assert p.cost_micros(1_000_000, 0) == 12_500_000
    assert p.cost_micros(1, 1) == 50  # (10 + 30) x 1.25
    assert Pricing(USD_PER_M, 0, markup_ppm=1).cost_micros(1_000_000, 0) == 1_000_001


prices = st.integers(0, 10**16)
tokens = st.integers(0, 10**12)


@settings(max_examples=500, deadline=None)
@given(
    ip=prices, op=prices, crp=prices, cwp=prices, m=st.integers(0, 5_000_000), i=tokens, o=tokens, cr=tokens, cw=tokens
)
def test_cost_matches_decimal(ip, op, crp, cwp, m, i, o, cr, cw):
    p = Pricing(ip, op, crp, cwp, m)
    exact = decimal_cost(p, i, o, cr, cw)
    assert p.cost_micros(i, o, cr, cw) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert p.cost_micros_ceil(i, o, cr, cw) == int(exact.quantize(Decimal(1), rounding=ROUND_CEILING))


def test_big_numbers():
    p = Pricing(2**63, 2**63, 2**63, 2**63, 10**9)
    n = 2**40
    exact = decimal_cost(p, n, n, n, n)
    assert p.cost_micros(n, n, n, n) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    m = 2**64 - 1
    top = Pricing(m, m, m, m, m)
    exact = decimal_cost(top, m, m, m, m)
    assert top.cost_micros(m, m, m, m) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert top.cost_micros_ceil(m, m, m, m) == int(exact.quantize(Decimal(1), rounding=ROUND_CEILING))
    with pytest.raises(OverflowError):
        Pricing(-1, 0)
    with pytest.raises(OverflowError):
        Pricing(1, 1).cost_micros(-1, 0)


@settings(max_examples=500, deadline=None)
@given(op=st.integers(1, 10**16), m=st.integers(0, 5_000_000), budget=st.integers(-10, 10**15))
def test_affordable_output_tokens(op, m, budget):
    p = Pricing(0, op, markup_ppm=m)
    n = p.affordable_output_tokens(budget)
    if budget <= 0:
        assert n == 0
        return
    assert n == int((Decimal(budget) * 10**18 / (Decimal(op) * (10**6 + m))).to_integral_value(rounding=ROUND_FLOOR))
    # n tokens fit (unrounded cost), n + 1 do not
    assert decimal_cost(p, 0, n) <= budget < decimal_cost(p, 0, n + 1)


def test_affordable_free_output():
    assert Pricing(5, 0).affordable_output_tokens(1) == 2**62
    assert Pricing(5, 0).affordable_output_tokens(0) == 0


# ------------------------------------------------------------------ ledger


def test_reserve_settle_release():
    led = Ledger()
    led.load("k", 100, 1_000)
    assert led.snapshot("k") == (100, 0, 1_000)
    h = led.reserve("k", 50, 600)
    assert isinstance(h, Hold) and h.micros == 600 and h.key_id == "k" and not h.done
    assert led.snapshot("k") == (100, 600, 1_000)
    h2 = led.reserve("k", 50, 600)
    assert h2.micros == 300  # what is left
    assert led.reserve("k", 1, 10) is None
    assert h.settle(250) is True
    assert h.done
    assert h.settle(1) is False and h.release() is False
    assert led.snapshot("k") == (350, 300, 1_000)
    assert h2.release() is True
    assert h2.release() is False
    assert led.snapshot("k") == (350, 0, 1_000)
    # actual above the hold is recorded in full (overspend)
    h3 = led.reserve("k", 10, 10)
    h3.settle(700)
    assert led.snapshot("k") == (1_050, 0, 1_000)
    assert led.reserve("k", 0, 10) is None


def test_unknown_and_uncapped_keys():
    led = Ledger()
    assert led.snapshot("nope") == (0, 0, None)
    h = led.reserve("new", 10, 10**15)
    assert h.micros == 10**15
    assert led.snapshot("new") == (0, 10**15, None)
    h.settle(5)
    assert led.snapshot("new") == (5, 0, None)


def test_load_keeps_holds_and_set_cap_forget():
    led = Ledger()
    led.load("k", 0, 100)
    h = led.reserve("k", 10, 40)
    led.load("k", 30, 200)  # reset spent from the database: the hold stays
    assert led.snapshot("k") == (30, 40, 200)
    led.set_cap("k", None)
    assert led.snapshot("k")[2] is None
    led.set_cap("k", 50)
    assert led.reserve("k", 1, 1) is None  # 30 + 40 >= 50
    h.settle(10)
    assert led.snapshot("k") == (40, 0, 50)
    led.forget("k")
    assert led.snapshot("k") == (0, 0, None)


def test_min_above_available_and_zero_cap():
    led = Ledger()
    led.load("z", 0, 0)
    assert led.reserve("z", 1, 1) is None
    h = led.reserve("z", 0, 100)
    assert h is not None and h.micros == 0
    led.load("k", 0, 100)
    assert led.reserve("k", 101, 200) is None
    assert led.reserve("k", 100, 50).micros == 100  # want below min: min is held


def test_hold_released_on_drop():
    led = Ledger()
    led.load("k", 0, 100)
    h = led.reserve("k", 10, 70)
    assert led.snapshot("k") == (0, 70, 100)
    del h
    gc.collect()
    assert led.snapshot("k") == (0, 0, 100)
    h = led.reserve("k", 10, 70)
    h.settle(20)
    del h
    gc.collect()
    assert led.snapshot("k") == (20, 0, 100)


def test_threads_never_exceed_cap():
    led = Ledger()
    cap = 50_000
    led.load("k", 0, cap)
    spent = [0] * 50
    violations = []
    barrier = threading.Barrier(50)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(400):
            h = led.reserve("k", 3, 17)
            if h is None:
                continue
            s, r, c = led.snapshot("k")
            if s + r > cap:
                violations.append((s, r))
            if (i + t) % 4 == 0:
                h.release()
            else:
                a = (i * 7 + t) % 4  # < min: never above the hold
                spent[t] += a
                h.settle(a)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not violations
    s, r, c = led.snapshot("k")
    assert (s, r, c) == (sum(spent), 0, cap)
    assert s <= cap


def test_threads_holds_sum_bounded():
    """All holds outstanding at once never exceed the cap (nothing settles)."""
    led = Ledger()
    cap = 10_000
    led.load("k", 0, cap)
    holds: list[list[Hold]] = [[] for _ in range(50)]

    def worker(t: int) -> None:
        for _ in range(200):
            h = led.reserve("k", 1, 7)
            if h is not None:
                holds[t].append(h)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = sum(h.micros for hs in holds for h in hs)
    assert total == cap  # 50 x 200 x 7 wanted, far over the cap: filled exactly
    assert led.snapshot("k") == (0, cap, cap)
    holds.clear()
    gc.collect()
    assert led.snapshot("k") == (0, 0, cap)
