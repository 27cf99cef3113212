"""``tollway serve``, ``init``, ``compact``, ``search``, ``usage``, ``wallet`` and ``billing``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from tollway.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from tollway.keys import KeyStore


@contextlib.contextmanager
def _key_store(settings: Settings) -> Iterator["KeyStore"]:
    """The key store on a migrated database, closed afterwards."""
    from tollway.keys import KeyStore
    from tollway.store import Database

    db = Database(settings.database_url)
    try:
        db.migrate()
        yield KeyStore(db)
    finally:
        db.dispose()


def _prepare(settings: Settings, *, announce_existing: bool) -> int:
    """Migrate the database and make sure an admin key exists (printing a new secret once)."""
    with _key_store(settings) as store:
        try:
            key, secret = store.ensure_admin(settings.admin_key)
        except ValueError as exc:
            print(f"tollway: {exc}", file=sys.stderr)
            return 2
        if secret is not None:
            print(
                "Created the account and its admin key. The secret is shown only this once:\n\n"
                f"    {secret}\n\n"
                "Use it as the Bearer token of /v1/keys to mint per-user keys.",
                flush=True,
            )
        elif key is None and announce_existing:
            print("An admin key already exists; nothing to do. (`tollway init --new-account NAME` adds a tenant.)")
    return 0


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    if args.new_account:
        with _key_store(settings) as store:
            key, secret = store.new_account(args.new_account)
        print(f"Created account {key.account_id} ({args.new_account}). Admin secret, shown once:\n\n    {secret}\n")
        return 0
    return _prepare(settings, announce_existing=True)


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    """Rewrite the thread tables so that erased threads leave no bytes behind (see ThreadStore.compact)."""
    from tollway.threads import ThreadStore

    with _key_store(settings) as store:
        ThreadStore(store.db).compact()
    print("Compacted the thread tables: no deleted thread's text remains in their files.")
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """``tollway search reindex`` / ``status``: the index generations, and a rebuild in the background."""
    from tollway.search.service import request_rebuild
    from tollway.search.store import SearchStore

    with _key_store(settings) as store:
        search = SearchStore(store.db)
        if args.action == "reindex":
            space = request_rebuild(search, settings.search)
            print(
                f"Generation {space.space} ({space.embedder}, {space.dim} dimensions, {space.backend}) will be built "
                "by the running gateway (or at its next start); queries use the current one until it is complete."
            )
            return 0
        counts = search.counts()
        for s in search.spaces():
            extra = f", built up to chunk {s.built_upto} of {counts['max_chunk_id']}" if s.state == "building" else ""
            print(f"{s.space}: {s.state}, {s.embedder}, {s.dim} dimensions, {s.backend}{extra}")
        print(
            f"backlog: {counts['backlog']} messages; indexed: {counts['messages']} messages in {counts['chunks']} chunks"
        )
    return 0


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    """``tollway usage rebuild`` / ``verify``: the usage rollups recomputed from, or checked against, the events."""
    from tollway.ledger import rollups

    with _key_store(settings) as store:
        if args.action == "rebuild":
            written = rollups.rebuild(store.db, args.account)
            print(f"Rebuilt the usage rollups from the events: {written} rollup rows.")
            return 0
        wrong = rollups.differences(store.db, args.account)
        for account, span, bucket, key_id, model, stored, expected in wrong[:20]:
            print(
                f"{account} {'hour' if span == rollups.HOUR else 'day'} {bucket} {key_id} {model}: rollup {stored}, events {expected}"
            )
        if wrong:
            print(
                f"{len(wrong)} rollup rows differ from the events; `tollway usage rebuild` recomputes them.",
                file=sys.stderr,
            )
            return 1
        print("The usage rollups match the events.")
    return 0


def cmd_wallet(args: argparse.Namespace, settings: Settings) -> int:
    """``tollway wallet verify``: every balance is the sum of its entries, every debit its event's cost."""
    from tollway.wallet.store import WalletStore

    with _key_store(settings) as store:
        wallets = WalletStore(store.db)
        problems = wallets.verify()
        accounts = len(wallets.totals())
    for problem in problems:
        print(f"wallet: {problem}", file=sys.stderr)
    if problems:
        print(f"wallet verify: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"wallet verify: ok ({accounts} wallet(s); every balance is the sum of its entries, every debit its event's)")
    return 0


def _when(value: str) -> int:
    """Unix ms, or an ISO date / date-time (UTC unless it says otherwise)."""
    import datetime as dt

    if value.isdigit():
        return int(value)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, date-time or Unix ms: {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def _margin(value: str):
    from tollway.billing.export import parse_margin

    try:
        return parse_margin(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_billing(args: argparse.Namespace, settings: Settings) -> int:
    """``tollway billing invoice-items --from --to [--margin-percent]`` / ``meter-events``."""
    from tollway.billing.export import Exporter
    from tollway.wallet.stripe_api import NOT_CONFIGURED, StripeApi

    api = StripeApi(settings.wallet)
    if not api.configured:
        print(f"tollway: {NOT_CONFIGURED}", file=sys.stderr)
        return 2
    with _key_store(settings) as store:
        exporter = Exporter(store.db, api)
        if args.action == "meter-events":
            result = exporter.meter_events()
            print(f"meter events: {result.sent} sent, {result.already} already in Stripe, {result.skipped} refused; "
                  f"exported up to usage event {result.last_usage_id}")  # fmt: skip
            return 0
        if args.start is None or args.end is None or args.end <= args.start:
            print("tollway: invoice-items needs --from and a later --to", file=sys.stderr)
            return 2
        items = exporter.invoice_items(None, args.start, args.end, args.margin_percent)
    for item in items:
        state = "created" if item["created"] else "already there"
        print(f"{item['key_id']} -> {item['stripe_customer_id']}: {item['amount_cents'] / 100:.2f} USD, "
              f"{item['requests']} requests, {item['invoice_item_id']} ({state})")  # fmt: skip
    print(
        f"{sum(i['created'] for i in items)} invoice item(s) created, {sum(not i['created'] for i in items)} already there"
    )
    return 0


def _serve_robyn_child(args: argparse.Namespace, settings: Settings) -> int:
    """The Robyn server itself, in the child process of ``tollway serve --server robyn``."""
    import logging

    from tollway.gateway import Gateway
    from tollway.http.robyn import serve_robyn
    from tollway.ledger.owner import AnotherGateway, GatewayLock, die_with_supervisor

    die_with_supervisor()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("robyn", "actix_server", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    owner = GatewayLock(settings.data_dir, settings.database_url)
    try:
        owner.acquire(wait=2.0)  # a predecessor that just died may take a moment to let go
    except AnotherGateway as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 1
    print(f"Tollway listening on http://{args.host}:{args.port} (robyn)", flush=True)
    serve_robyn(Gateway(settings, owner=owner).app, args.host, args.port, settings.header_timeout)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from tollway.ledger.owner import SUPERVISOR_ENV, check_free

    if args.robyn_child:
        return _serve_robyn_child(args, settings)

    # Checked here so a second gateway exits at once; the process that owns the
    # ledger (Robyn's, or granian's worker) then takes the lock for its life.
    refused = check_free(settings.data_dir, settings.database_url)
    if refused:
        print(f"tollway: {refused}", file=sys.stderr)
        return 1
    code = _prepare(settings, announce_existing=False)
    if code:
        return code
    import resource

    from tollway.config.settings import max_connections_for

    # The connection guard of the serving process watches this port (Gateway.startup).
    os.environ["TOLLWAY_LISTEN_PORT"] = str(args.port)
    max_connections = args.backpressure or max_connections_for(settings, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.environ["TOLLWAY_MAX_CONNECTIONS"] = str(max_connections)
    if args.server == "robyn":
        from tollway.supervisor import child_env, supervise

        # Robyn runs in a child that is started again when it dies (a Robyn panic
        # aborts the process; see tollway.supervisor).
        child = [
            sys.executable,
            "-m",
            "tollway",
            "serve",
            "--server",
            "robyn",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--robyn-child",
        ]
        return supervise(child, child_env(SUPERVISOR_ENV))
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    print(f"Tollway listening on http://{args.host}:{args.port} (granian)", flush=True)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # the worker dies with us (die_with_supervisor)
    Granian(
        "tollway.gateway:create_asgi_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        backlog=args.backlog,
        # One permit per connection, below the fd limit: at the limit granian waits
        # (the guard sheds silent connections) instead of spinning on EMFILE.
        backpressure=max_connections,
        # Partial headers, and the idle time between two requests of a connection.
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
        websockets=False,
        log_access=args.access_log,
        workers_kill_timeout=int(settings.drain_timeout) + 10,
        # A worker that dies (SIGKILL, OOM) is started again; its successor replays the
        # journal. A respawned worker that dies within 5.5 s stops the gateway (crash loop).
        respawn_failed_workers=True,
    ).serve()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollway", description="Self-hosted backend for AI apps.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--server", choices=["granian", "robyn"], default="granian")
    serve.add_argument("--backlog", type=int, default=4096, help="listen backlog (kernel somaxconn caps it)")
    serve.add_argument(
        "--backpressure",
        type=int,
        default=0,
        help="connections held at once before accepting waits (default: TOLLWAY_MAX_CONNECTIONS, else from the fd limit)",
    )
    serve.add_argument("--access-log", action="store_true")
    serve.add_argument("--robyn-child", action="store_true", help=argparse.SUPPRESS)  # see tollway.supervisor
    serve.set_defaults(func=cmd_serve)

    init = sub.add_parser("init", help="create the account and print its admin secret (once)")
    init.add_argument("--new-account", metavar="NAME", help="create another account (tenant) with its own admin key")
    init.set_defaults(func=cmd_init)

    compact = sub.add_parser(
        "compact",
        help="rewrite the thread tables so deleted threads leave no bytes in the files (PostgreSQL: VACUUM FULL, locks them)",
    )
    compact.set_defaults(func=cmd_compact)

    search = sub.add_parser("search", help="the search index: its status, or a rebuild (reindex)")
    search.add_argument(
        "action",
        choices=["status", "reindex"],
        help="reindex: embed every stored message again (after changing TOLLWAY_SEARCH_EMBEDDER), in the background",
    )
    search.set_defaults(func=cmd_search)

    usage = sub.add_parser(
        "usage", help="the usage rollups behind /v1/usage: rebuild them from the events, or verify them"
    )
    usage.add_argument(
        "action",
        choices=["rebuild", "verify"],
        help="rebuild: recompute them in one transaction (safe while the gateway runs: its writer waits); verify: compare",
    )
    usage.add_argument("--account", help="only this account's rollups")
    usage.set_defaults(func=cmd_usage)

    wallet = sub.add_parser("wallet", help="the prepaid wallets: verify that each balance is the sum of its ledger")
    wallet.add_argument("action", choices=["verify"])
    wallet.set_defaults(func=cmd_wallet)

    billing = sub.add_parser("billing", help="usage into Stripe: invoice items for a period, or meter events now")
    billing.add_argument("action", choices=["invoice-items", "meter-events"])
    billing.add_argument("--from", dest="start", type=_when, help="period start: a date, date-time (UTC) or Unix ms")
    billing.add_argument("--to", dest="end", type=_when, help="period end (excluded)")
    billing.add_argument("--margin-percent", type=_margin, default="0", help="added to the spend, e.g. 20")
    billing.set_defaults(func=cmd_billing)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"tollway: configuration error: {exc}", file=sys.stderr)
        return 2
    return args.func(args, settings)
