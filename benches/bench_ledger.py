"""The ledger on the hot path: one reserve + settle per model call.

`pytest benches/bench_ledger.py --benchmark-enable`. Compares, in one run: the Rust
ledger on one budget (every call today) and on two (a key and a wallet, next), the
pure-Python reference, and the same Rust call made async (an awaited coroutine, and
asyncio.to_thread), which is what a ledger behind a network round trip would need.
"""

from __future__ import annotations

import asyncio

from tollway._core import Ledger
from tollway.ledger.reference import ReferenceLedger


def _sync(led, budgets):
    for b in budgets:
        led.load(b, 0, 10**15)
    if len(budgets) == 1:
        budget = budgets[0]

        def once():
            led.reserve(budget, 100, 5000).settle(1234)
    else:

        def once():
            led.reserve_all(budgets, 100, 5000).settle(1234)

    return once


def test_rust_one_budget(benchmark):
    led = Ledger()
    benchmark(_sync(led, ["key_1"]))
    assert led.snapshot("key_1")[1] == 0


def test_rust_two_budgets(benchmark):
    led = Ledger()
    benchmark(_sync(led, ["key_1", "wallet:acct_1"]))
    assert led.snapshot("wallet:acct_1")[1] == 0


def test_reference_one_budget(benchmark):
    led = ReferenceLedger()
    benchmark(_sync(led, ["key_1"]))
    assert led.snapshot("key_1")[1] == 0


def test_rust_awaited_coroutine(benchmark):
    led = Ledger()
    led.load("key_1", 0, 10**15)
    loop = asyncio.new_event_loop()

    async def reserve():
        return led.reserve("key_1", 100, 5000)

    async def many():
        for _ in range(1000):
            (await reserve()).settle(1234)

    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()


def test_rust_to_thread(benchmark):
    led = Ledger()
    led.load("key_1", 0, 10**15)
    loop = asyncio.new_event_loop()

    async def many():
        for _ in range(100):
            (await asyncio.to_thread(led.reserve, "key_1", 100, 5000)).settle(1234)

    benchmark(lambda: loop.run_until_complete(many()))
    loop.close()
