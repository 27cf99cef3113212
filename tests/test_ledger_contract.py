"""The ledger contract: every implementation (the Rust one, the pure-Python reference,
and the Redis one to come: one more entry in IMPLEMENTATIONS) behaves the same."""

from __future__ import annotations

import gc
import threading
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.ledger import Ledger, LocalLedger
from tollway.ledger.reference import ReferenceLedger
from tollway.ledger.settlement import settle

IMPLEMENTATIONS: dict[str, Callable[[], Ledger]] = {"rust": LocalLedger, "reference": ReferenceLedger}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def ledger(request) -> Ledger:
    return IMPLEMENTATIONS[request.param]()


def test_reserve_settle_release(ledger: Ledger) -> None:
    ledger.load("key_a", 0, 100)
    first = ledger.reserve("key_a", 10, 60)
    assert first is not None and first.micros == 60 and first.budgets == ["key_a"]
    second = ledger.reserve("key_a", 10, 60)
    assert second is not None and second.micros == 40  # what is left
    assert ledger.reserve("key_a", 1, 1) is None
    assert ledger.snapshot("key_a") == (0, 100, 100)
    assert first.settle(20) and not first.settle(20) and not first.release() and first.done
    assert ledger.snapshot("key_a") == (20, 40, 100)
    assert second.release() and not second.settle(5)
    assert ledger.snapshot("key_a") == (20, 0, 100)


def test_unknown_budgets_have_no_limit_and_min_above_want_counts(ledger: Ledger) -> None:
    hold = ledger.reserve("new", -5, 7)
    assert hold is not None and hold.micros == 7
    assert ledger.snapshot("new") == (0, 7, None)
    wide = ledger.reserve("new", 50, 10)  # want below min counts as min
    assert wide is not None and wide.micros == 50
    assert ledger.snapshot("never") == (0, 0, None)


def test_overspend_is_recorded_and_limit_changes_apply_to_new_holds(ledger: Ledger) -> None:
    ledger.load("k", 0, 100)
    hold = ledger.reserve("k", 10, 50)
    hold.settle(130)  # the provider reported more than the hold: billed in full
    assert ledger.snapshot("k") == (130, 0, 100)
    assert ledger.reserve("k", 0, 1) is None
    ledger.set_cap("k", 200)
    assert ledger.reserve("k", 70, 100).micros == 70
    ledger.set_cap("k", None)
    assert ledger.reserve("k", 1, 10**12).micros == 10**12


def test_load_keeps_the_holds_in_flight(ledger: Ledger) -> None:
    ledger.load("k", 0, 100)
    hold = ledger.reserve("k", 10, 30)
    ledger.load("k", 50, 100)  # rebuilt from the database while a request is in flight
    assert ledger.snapshot("k") == (50, 30, 100)
    hold.settle(10)
    assert ledger.snapshot("k") == (60, 0, 100)


def test_a_dropped_hold_is_released(ledger: Ledger) -> None:
    ledger.load("k", 0, 100)
    hold = ledger.reserve("k", 10, 30)
    del hold
    gc.collect()
    assert ledger.snapshot("k") == (0, 0, 100)


def test_two_budgets_all_or_none(ledger: Ledger) -> None:
    ledger.load("key_a", 0, 100)
    ledger.load("wallet:acct", 0, 30)
    hold = ledger.reserve_all(["key_a", "wallet:acct"], 10, 50)
    assert not isinstance(hold, str) and hold.micros == 30  # the tighter budget decides
    assert hold.budgets == ["key_a", "wallet:acct"]
    refused = ledger.reserve_all(["key_a", "wallet:acct"], 1, 5)
    assert refused == "wallet:acct"  # names the exhausted budget ...
    assert ledger.snapshot("key_a") == (0, 30, 100)  # ... and held nothing on the other
    assert ledger.reserve_all(["wallet:acct", "key_a"], 1, 5) == "wallet:acct"
    hold.settle(12)
    assert ledger.snapshot("key_a") == (12, 0, 100) and ledger.snapshot("wallet:acct") == (12, 0, 30)
    ledger.load("key_a", 95, 100)
    assert ledger.reserve_all(["key_a", "wallet:acct"], 10, 10) == "key_a"  # the first that cannot, in order
    assert ledger.reserve_all(["wallet:acct", "key_a"], 10, 10) == "key_a"
    assert ledger.snapshot("wallet:acct") == (12, 0, 30)
    with pytest.raises(ValueError):
        ledger.reserve_all([], 1, 1)


def test_a_budget_named_twice_is_held_once(ledger: Ledger) -> None:
    ledger.load("k", 0, 100)
    hold = ledger.reserve_all(["k", "k"], 10, 60)
    assert hold.micros == 60 and hold.budgets == ["k"]
    assert ledger.snapshot("k") == (0, 60, 100)


def test_the_settlement_rule(ledger: Ledger) -> None:
    ledger.load("k", 0, None)
    reported = ledger.reserve("k", 0, 100)
    assert settle(reported, 250, estimated=False) == 250  # usage present: priced in full
    estimated = ledger.reserve("k", 0, 100)
    assert settle(estimated, 250, estimated=True) == 100  # usage missing: capped at the hold
    cheap = ledger.reserve("k", 0, 100)
    assert settle(cheap, 40, estimated=True) == 40
    assert ledger.snapshot("k") == (390, 0, None)


@pytest.mark.parametrize("budgets", [["key_a"], ["key_a", "wallet:acct"]])
def test_fifty_way_fan_out_is_bound_on_each_budget(ledger: Ledger, budgets: list[str]) -> None:
    """50 requests at once, each holding 7: exactly floor(limit / 7) of them fit the
    tighter budget, whichever order the threads run in, and no budget is overspent."""
    ledger.load("key_a", 0, 7 * 30 + 3)
    ledger.load("wallet:acct", 0, 7 * 12 + 6)
    start = threading.Barrier(50)
    held: list[object] = []

    def one() -> None:
        start.wait()
        hold = ledger.reserve_all(budgets, 7, 7)
        if not isinstance(hold, str):
            held.append(hold)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fits = 12 if "wallet:acct" in budgets else 30
    assert len(held) == fits
    for budget in budgets:
        spent, reserved, limit = ledger.snapshot(budget)
        assert reserved == 7 * fits <= limit
    for hold in held:
        hold.settle(7)
    for budget in budgets:
        spent, reserved, limit = ledger.snapshot(budget)
        assert (spent, reserved) == (7 * fits, 0) and spent <= limit


def test_concurrent_settle_and_release_never_overspend(ledger: Ledger) -> None:
    ledger.load("key_a", 0, 20_000)
    ledger.load("wallet:acct", 0, 9_000)
    spent_on_wallet = [0] * 8

    def worker(n: int) -> None:
        for i in range(2_000):
            on = ["key_a", "wallet:acct"] if (i + n) % 2 else ["key_a"]
            hold = ledger.reserve_all(on, 3, 11)
            if isinstance(hold, str):
                continue
            if i % 3 == 0:
                hold.release()
            else:
                hold.settle(i % 4)
                if len(on) == 2:
                    spent_on_wallet[n] += i % 4

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    key_spent, key_reserved, _ = ledger.snapshot("key_a")
    wallet_spent, wallet_reserved, _ = ledger.snapshot("wallet:acct")
    assert (key_reserved, wallet_reserved) == (0, 0)
    assert wallet_spent == sum(spent_on_wallet) <= 9_000 and key_spent <= 20_000


# The two implementations agree on any sequence of operations.
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
            st.integers(-5, 60),
            st.integers(-5, 80),
        ),
        st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 120)),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("limit"), st.sampled_from(["a", "b", "c"]), st.one_of(st.none(), st.integers(0, 200))),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ops=_ops)
def test_the_implementations_agree(ops) -> None:
    ledgers = [make() for make in IMPLEMENTATIONS.values()]
    holds: list[list[object]] = [[] for _ in ledgers]
    for ledger in ledgers:
        ledger.load("a", 0, 100)
        ledger.load("b", 10, 60)
    for op in ops:
        results = []
        for ledger, mine in zip(ledgers, holds, strict=True):
            if op[0] == "reserve":
                hold = ledger.reserve_all(op[1], op[2], op[3])
                if not isinstance(hold, str):
                    mine.append(hold)
                    results.append(("held", hold.micros, list(hold.budgets)))
                else:
                    results.append(("refused", hold))
            elif op[0] in ("settle", "release"):
                if mine:
                    hold = mine[op[1] % len(mine)]
                    results.append(hold.settle(op[2]) if op[0] == "settle" else hold.release())
            else:
                ledger.set_cap(op[1], op[2])
        assert all(r == results[0] for r in results), (op, results)
        snapshots = [[ledger.snapshot(b) for b in "abc"] for ledger in ledgers]
        assert all(s == snapshots[0] for s in snapshots), (op, snapshots)
