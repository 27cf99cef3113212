"""The gateway: settings, database, keys, ledger, usage writer and upstream client, wired to routes."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import resource
import time
from typing import Any, Callable, Optional

from sqlalchemy.exc import DataError

from tollway import calls as call_path
from tollway._core import ConnectionGuard, UpstreamClient
from tollway.background import BackgroundWork, OpenCounter
from tollway.batches import routes as batch_routes
from tollway.billing import routes as billing_routes
from tollway.capabilities import assemble
from tollway.config import ModelRoute, Settings, load_settings
from tollway.config.settings import DEFAULT_BASE_URLS, max_connections_for
from tollway.events import routes as event_routes
from tollway.hooks import Hooks
from tollway.http import openapi
from tollway.http.core import App, HTTPError
from tollway.jobs import routes as job_routes
from tollway.keys import KeyStore
from tollway.keys import routes as key_routes
from tollway.keys.auth import Authenticator
from tollway.ledger import Ledger, LocalLedger
from tollway.ledger import routes as usage_routes
from tollway.ledger.journal import Journal
from tollway.ledger.owner import GatewayLock, die_with_supervisor
from tollway.ledger.replay import replay
from tollway.ledger.writer import UsageWriter
from tollway.policy import routes as policy_routes
from tollway.policy.credits import CreditStore
from tollway.policy.ratelimit import RateLimiter
from tollway.policy.service import Policy, policy_clock
from tollway.proxy import extras as proxy_extras
from tollway.proxy import routes as proxy_routes
from tollway.proxy.spin import SpinWait
from tollway.responses import routes as response_routes
from tollway.search import routes as search_routes
from tollway.store import Database, now_ms
from tollway.threads import ThreadStore
from tollway.threads import routes as thread_routes
from tollway.tools import ToolStore
from tollway.tools import routes as tool_routes
from tollway.tools.dispatch import Dispatcher
from tollway.wallet import routes as wallet_routes
from tollway.wallet import stripe_routes
from tollway.wallet.recharge import AutoRecharge
from tollway.wallet.service import Wallet
from tollway.wallet.store import WalletStore
from tollway.wallet.stripe_api import StripeApi

log = logging.getLogger("tollway")

# The cyclic GC's thresholds (see _startup_sync). Its counts are net: an object freed
# by reference counting gives its allocation back, so requests that come and go
# barely move them; what does is objects that stay, above all those of held streams
# (about 26 per stream, with the server's and asyncio's). A collection of generation
# 1 walks everything promoted since the last one, up to GEN0 x GEN1 objects, and
# every stream waits for it: 20,000 x 20 paused them all for ~100 ms in the
# 5,000-stream hold test, 4,000 x 10 for 7-17 ms once a second, 1,000 x 4 for about
# 1 ms (hold-test TTFB p99 16-20 ms -> 11-12 ms, three alternating runs each).
# Full collections, which walk every stream, still come after the same number of
# allocations (GEN0 x GEN1 x GEN2 = 40 million). Throughput under wrk -c32 unchanged.
GC_THRESHOLDS = (1_000, 4, 10_000)


def reserve_fd_table(limit: int = 1 << 16) -> int:
    """Grow this process's file-descriptor table to its final size now; return that size.

    The kernel grows the table by doubling when a new fd does not fit, and in a
    multi-threaded process each growth waits for an RCU grace period: measured here,
    a 20-55 ms stall of the thread that accepted or connected, at 1,024, 2,048 and
    4,096 open sockets (a proxied stream holds two). Taking an fd just below the
    open-file limit once at start-up (then closing it) pays that cost before any
    client waits on it; the table costs 8 bytes per slot.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    size = limit if soft == resource.RLIM_INFINITY else min(soft, limit)
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        os.close(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, size - 1))
    except OSError:
        return 0
    finally:
        os.close(fd)
    return size


def bad_input_error(exc: Exception) -> Optional[HTTPError]:
    """The 400 behind an exception that only bad input raises (the last guard; see App.error_mappers)."""
    if isinstance(exc, DataError):  # the database refused a value (too long, out of range, a NUL): nothing was written
        return HTTPError(
            400, "a value in the request cannot be stored (too long, out of range or with a NUL character)"
        )
    if isinstance(exc, OverflowError):
        return HTTPError(400, "a number in the request is out of range")
    if isinstance(exc, RecursionError):
        return HTTPError(400, "the request nests too deeply")
    return None


# The capabilities, in order: each may use the services those before it provide.
CAPABILITIES = [
    key_routes.capability,
    policy_routes.capability,
    usage_routes.capability,
    proxy_routes.capability,  # provides proxy
    proxy_extras.capability,
    response_routes.capability,
    thread_routes.capability,  # provides turns
    tool_routes.capability,
    search_routes.capability,  # provides search
    call_path.capability,  # provides calls (model calls and turns with no HTTP request)
    job_routes.capability,  # provides jobs
    batch_routes.capability,  # the native batch APIs on the jobs (provides batches)
    wallet_routes.capability,
    stripe_routes.capability,
    billing_routes.capability,
    event_routes.capability,  # after the wallet: its low-balance hook reads the debits
    openapi.capability,
]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        ledger: Optional[Ledger] = None,
        owner: Optional[GatewayLock] = None,
        clock: Optional[Callable[[], int]] = None,
    ) -> None:
        """``clock``: Unix ms for the key policy (windows, expiry, rotation, rate limits);
        tests move it. Default: the wall clock, shifted by TOLLWAY_CLOCK_OFFSET_MS if set."""
        self.settings = settings
        self.db = Database(settings.database_url)
        # One gateway per data (tollway.ledger.owner); taken at start if not given held.
        self.owner = owner if owner is not None else GatewayLock(settings.data_dir, settings.database_url)
        self.journal = Journal(settings.data_dir / "journal")
        self.hooks = Hooks()
        self.store = KeyStore(self.db)
        self.ledger: Ledger = ledger if ledger is not None else LocalLedger()
        self.clock = clock if clock is not None else policy_clock()
        self.credits = CreditStore(self.db)
        self.auth = Authenticator(self.store, self.ledger, self.clock, self.credits)
        self.policy = Policy(self.ledger, self.auth.budgets, RateLimiter(), self.clock)
        self.wallet = Wallet(self.ledger, WalletStore(self.db), settings.wallet.enabled)
        self.auth.budgets.shared = self.wallet.budgets_for
        self.stripe_api = StripeApi(settings.wallet)
        self.recharge = AutoRecharge(self.wallet, self.wallet.store, self.stripe_api, self.clock)
        self.writer = UsageWriter(self.db, settings.data_dir, journal=self.journal, hooks=self.hooks)
        self.threads = ThreadStore(self.db, self.hooks)
        self.tools = ToolStore(self.db)
        self.dispatcher = Dispatcher()
        self.background = BackgroundWork()
        self.client: Optional[UpstreamClient] = None
        self.guard: Optional[ConnectionGuard] = None
        self.requests_open = 0  # non-stream requests in flight (event loop thread only)
        self.streams_open = OpenCounter()
        self.spin = SpinWait(settings.spin_wait_us)
        self.started_at = now_ms()
        self.app = App(settings.max_body_bytes)
        self.app.on_startup.append(self.startup)
        self.app.on_shutdown.append(self.shutdown)
        self.app.authenticate = self.auth.authenticate
        self.app.error_mappers.append(bad_input_error)
        services = assemble(self.app, self.hooks, self._services(), CAPABILITIES)
        self.app.on_shutdown.append(self.drain)
        self.calls = services["calls"]
        self.jobs = services["jobs"]
        self.batches = services["batches"]

    def _services(self) -> dict[str, Any]:
        """What capabilities may ask for, by parameter name (see tollway.capabilities)."""
        return {
            "settings": self.settings,
            "db": self.db,
            "auth": self.auth,
            "store": self.store,
            "ledger": self.ledger,
            "policy": self.policy,
            "credits": self.credits,
            "wallet": self.wallet,
            "stripe_api": self.stripe_api,
            "recharge": self.recharge,
            "writer": self.writer,
            "threads": self.threads,
            "tools": self.tools,
            "background": self.background,
            "runtime": self,  # the call path's view of the gateway (proxy.handler.Runtime)
            "is_routable": self.is_routable,
            "started_at": self.started_at,
        }

    def in_flight(self) -> int:
        return self.requests_open + self.streams_open.value + self.background.pending.value

    def serving_alone(self) -> bool:
        """Is the one request being served the only work in flight (nothing else for the loop to run)?"""
        return self.app.handling == 1 and self.in_flight() == 1

    def is_routable(self, route: ModelRoute) -> bool:
        """A model is listed when its provider has a key or an explicitly chosen base URL."""
        provider = route.provider
        return bool(provider.api_key) or DEFAULT_BASE_URLS.get(provider.name) != provider.base_url

    async def startup(self) -> None:
        await asyncio.to_thread(self._startup_sync)
        s = self.settings
        self.client = UpstreamClient(
            connect_timeout=s.connect_timeout,
            first_byte_timeout=s.first_byte_timeout,
            read_timeout=s.read_timeout,
            stream_window=s.stream_window_bytes,
            client_stall_timeout=s.client_stall_timeout,
        )
        port = os.environ.get("TOLLWAY_LISTEN_PORT")
        if port and self.guard is None:
            # Silent connections, and responses a client stopped reading (see ConnectionGuard).
            self.guard = ConnectionGuard(
                int(port),
                header_timeout=s.header_timeout,
                max_connections=max_connections_for(s, resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
                user_timeout=s.client_stall_timeout,
            )

    def _startup_sync(self) -> None:
        reserve_fd_table()
        # Short: a worker that cannot have the lock must fail within granian's 5.5 s crash-loop window.
        self.owner.acquire(wait=2.0)
        self.db.migrate()
        # What a crash left in the journal goes to the database before the counters are rebuilt from it.
        replay(self.db, self.journal.directory, self.settings.data_dir, self.hooks)
        self.wallet.load()  # before the keys: their holds include the wallet's budget
        self.recharge.load()
        self.auth.preload()
        self.journal.open()
        self.writer.start()
        # Everything built so far lives as long as the process: keep it out of the
        # cyclic GC's scans; then bound the pauses (GC_THRESHOLDS).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def drain(self) -> None:
        """Wait (bounded) for requests and streams in flight. The first of the shutdown hooks
        (App.shutdown runs them in reverse): then the capabilities stop, then ``shutdown``."""
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.in_flight() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight() > 0:
            log.warning("shutting down with %d requests still in flight", self.in_flight())

    async def shutdown(self) -> None:
        """Flush usage and close the database (after the drain and the capabilities' own stops)."""
        await self.dispatcher.aclose()
        await asyncio.to_thread(self.background.close)
        await asyncio.to_thread(self.writer.close, self.settings.drain_timeout)
        await asyncio.to_thread(self.recharge.wait)
        self.db.dispose()
        self.owner.release()


def create_asgi_app():
    """ASGI application factory (``tollway.gateway:create_asgi_app``, factory mode)."""
    from tollway.http.asgi import ASGIAdapter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    die_with_supervisor()
    settings = load_settings()
    return ASGIAdapter(Gateway(settings).app, body_timeout=settings.body_timeout)
