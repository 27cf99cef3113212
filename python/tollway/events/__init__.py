"""Account events, delivered as Standard Webhooks (README, "Events (webhooks)").

Other capabilities emit events in their own transactions::

    from tollway.events import emit

    with db.engine.begin() as conn:
        conn.execute(update(jobs)...)                       # the change
        emit(conn, account_id, "job.succeeded", {"job_id": job.id, ...})

The event and one delivery per subscribed endpoint commit (or roll back) with the change;
the sender (``sender.py``, started with the gateway) delivers them with retries. Types:
``outbox.EVENT_TYPES``. Layout: ``outbox.py`` (emit), ``store.py`` (endpoints, the
deliveries log), ``sender.py`` (delivery), ``sources.py`` (the events the gateway finds
itself: cap warnings, refusals, expiring keys, low balances), ``routes.py``, ``openapi.py``,
``config.py`` (``[events]``); outbound safety in ``tollway.outbound``; signing in
``tollway.webhooks``.
"""

from tollway.events.outbox import EVENT_TYPES, emit

__all__ = ["EVENT_TYPES", "emit"]
