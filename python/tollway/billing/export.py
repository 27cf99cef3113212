"""Usage into the app's own Stripe billing, for keys whose ``metadata.stripe_customer_id`` is set.

- **Metered**: every priced usage event of such a key becomes one Stripe meter event
  (v2), ``identifier`` = our usage event id, value = its cost in micro-USD. A cursor
  (``billing_cursors``) records the last event sent, moved after each batch; an export
  cut short sends part of a batch again, and Stripe keeps one event per identifier (its
  "already exists" answer counts as sent), so nothing is counted twice.
- **Invoiced**: for a period, one InvoiceItem per key (its spend with an optional margin,
  in cents, the request count in the description), recorded in
  ``billing_invoice_items`` (one per key and period) and created with an idempotency key
  of the key and period: a second run makes nothing new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Optional

import stripe
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tollway.store import Database, api_keys, billing_cursors, billing_invoice_items, now_ms, usage_events
from tollway.wallet.stripe_api import MICROS_PER_CENT, StripeApi

log = logging.getLogger("tollway.billing")
METER_CURSOR = "meter_events"
BATCH = 200
MAX_MARGIN = Decimal(1000)


def parse_margin(value: Any) -> Decimal:
    """A margin in percent, 0 to MAX_MARGIN, from a JSON number or a string; ValueError otherwise."""
    found = Decimal(-1)
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            found = Decimal(str(value))
        except InvalidOperation:
            pass
    if not found.is_finite() or not 0 <= found <= MAX_MARGIN:
        raise ValueError(f"a margin is a number of percent from 0 to {MAX_MARGIN}, not {value!r}")
    return found


def customer_of(metadata: Any) -> Optional[str]:
    value = metadata.get("stripe_customer_id") if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.startswith("cus_") and 4 < len(value) <= 255:
        return value
    return None


@dataclass
class MeterExport:
    sent: int = 0
    already: int = 0  # Stripe had the identifier: sent by an earlier, cut-short run
    skipped: int = 0  # refused by Stripe for good (e.g. older than its 35 days): logged
    last_usage_id: int = 0


class Exporter:
    def __init__(self, db: Database, api: StripeApi) -> None:
        self.db = db
        self.api = api

    def _customers(self, account_id: Optional[str] = None) -> dict[str, tuple[str, str, str]]:
        """key id -> (account id, key name, Stripe customer) for keys with a customer."""
        query = select(api_keys.c.id, api_keys.c.account_id, api_keys.c.name, api_keys.c.metadata)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r.id: (r.account_id, r.name, c) for r in rows if (c := customer_of(r.metadata)) is not None}

    # ---- metered ------------------------------------------------------------
    def meter_events(self, limit: Optional[int] = None) -> MeterExport:
        """Send the priced usage events after the cursor, oldest first (at most ``limit``)."""
        result = MeterExport()
        customers = self._customers()
        with self.db.engine.connect() as conn:
            cursor = conn.execute(
                select(billing_cursors.c.last_usage_id).where(billing_cursors.c.name == METER_CURSOR)
            ).scalar()
        last = int(cursor or 0)
        result.last_usage_id = last
        e = usage_events.c
        while limit is None or result.sent + result.already + result.skipped < limit:
            with self.db.engine.connect() as conn:
                rows = conn.execute(
                    select(e.id, e.event_id, e.key_id, e.cost_micros, e.created_at)
                    .where(e.id > last, e.cost_micros > 0)
                    .order_by(e.id)
                    .limit(BATCH)
                ).all()
            if not rows:
                break
            for row in rows:
                customer = customers.get(row.key_id)
                if customer is not None and row.event_id:
                    self._send(row, customer[2], result)
                last = row.id
            self._save_cursor(last, cursor is None)
            cursor = last
            result.last_usage_id = last
        return result

    def _send(self, row: Any, customer: str, result: MeterExport) -> None:
        try:
            self.api.meter_event(self.api.settings.meter_event_name, customer, row.cost_micros, row.event_id,
                                 row.created_at // 1000)  # fmt: skip
            result.sent += 1
        except stripe.StripeError as exc:
            message = str(getattr(exc, "user_message", None) or exc)
            if "already exists with identifier" in message:
                result.already += 1
            elif getattr(exc, "http_status", None) == 400:
                log.warning("meter event for usage event %s refused by Stripe: %s", row.event_id, message)
                result.skipped += 1
            else:
                raise  # (network, auth, 5xx): stop here; the cursor stays before this batch

    def _save_cursor(self, last: int, new: bool) -> None:
        with self.db.engine.begin() as conn:
            if new:
                conn.execute(insert(billing_cursors).values(name=METER_CURSOR, last_usage_id=last, updated_at=now_ms()))
            else:
                conn.execute(
                    update(billing_cursors)
                    .where(billing_cursors.c.name == METER_CURSOR)
                    .values(last_usage_id=last, updated_at=now_ms())
                )

    # ---- invoiced -----------------------------------------------------------
    def invoice_items(
        self, account_id: Optional[str], start_ms: int, end_ms: int, margin_percent: Decimal = Decimal(0)
    ) -> list[dict[str, Any]]:
        """One InvoiceItem per key with a Stripe customer and spend in [start, end): the
        items (``created`` False for one an earlier run made)."""
        if not 0 <= margin_percent <= MAX_MARGIN:
            raise ValueError(f"the margin must be from 0 to {MAX_MARGIN} percent")
        customers = self._customers(account_id)
        e, b = usage_events.c, billing_invoice_items.c
        with self.db.engine.connect() as conn:
            totals = conn.execute(
                select(e.key_id, func.count(), func.sum(e.cost_micros))
                .where(e.created_at >= start_ms, e.created_at < end_ms, e.key_id.in_(list(customers) or [""]))
                .group_by(e.key_id)
            ).all()
            done = {
                r.key_id: r
                for r in conn.execute(
                    select(billing_invoice_items).where(b.period_start == start_ms, b.period_end == end_ms)
                )
            }
        out = []
        for key_id, requests, micros in sorted(totals):
            account, name, customer = customers[key_id]
            if key_id in done:
                r = done[key_id]
                out.append(self._item(r.key_id, r.customer_id, r.invoice_item_id, r.amount_cents, r.requests, False))
                continue
            priced = Decimal(int(micros or 0)) * (1 + margin_percent / 100) / MICROS_PER_CENT
            cents = int(priced.quantize(Decimal(1), rounding=ROUND_HALF_UP))
            if cents <= 0:
                continue
            description = f"AI usage of {name}: {requests} requests"
            item_id = self.api.invoice_item(
                customer, cents, description,
                {"tollway_key_id": key_id, "tollway_account_id": account, "requests": str(requests)},
                (start_ms, end_ms),
            )  # fmt: skip
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(
                        insert(billing_invoice_items).values(
                            key_id=key_id, period_start=start_ms, period_end=end_ms, account_id=account,
                            customer_id=customer, invoice_item_id=item_id, amount_cents=cents, requests=requests,
                            created_at=now_ms(),
                        )
                    )  # fmt: skip
            except IntegrityError:  # a concurrent run recorded it (Stripe's idempotency made one item)
                out.append(self._item(key_id, customer, item_id, cents, requests, False))
                continue
            out.append(self._item(key_id, customer, item_id, cents, requests, True))
        return out

    @staticmethod
    def _item(key_id: str, customer: str, item_id: str, cents: int, requests: int, created: bool) -> dict[str, Any]:
        return {
            "object": "billing.invoice_item",
            "key_id": key_id,
            "stripe_customer_id": customer,
            "invoice_item_id": item_id,
            "amount_cents": int(cents),
            "requests": int(requests),
            "created": created,
        }
