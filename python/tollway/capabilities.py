"""Capabilities: what each one exports (routes, hooks, services) and how the gateway assembles them.

A capability is a function whose keyword parameters name the services it uses
(``auth``, ``store``, ``proxy``...) and which returns a ``Capability``: its routes,
its hooks, and the services it provides to the capabilities after it in the list.
``assemble`` calls each with exactly the services it names, so a capability sees
what it declared and nothing else (no capability imports the gateway).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from tollway.hooks import Hooks
from tollway.http.core import App, Handler


class Routes:
    """A capability's routes, declared with the same decorator as ``App.route``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Handler]] = []

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            self.items.append((method, path, handler))
            return handler

        return add


@dataclass
class Capability:
    routes: Routes = field(default_factory=Routes)
    hooks: Hooks = field(default_factory=Hooks)
    provides: dict[str, Any] = field(default_factory=dict)
    # Run after the gateway has started (database migrated, journal replayed), and
    # before it stops (in reverse order, before the database is closed).
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


Factory = Callable[..., Capability]


def assemble(app: App, hooks: Hooks, services: dict[str, Any], factories: Iterable[Factory]) -> dict[str, Any]:
    """Build each capability in order from the services it names; add its routes to ``app``
    and its hooks to ``hooks``; return the services, with those the capabilities provided."""
    services = dict(services)
    for factory in factories:
        names = [p.name for p in inspect.signature(factory).parameters.values()]
        missing = [n for n in names if n not in services]
        if missing:
            raise TypeError(
                f"{factory.__module__}.{factory.__qualname__} needs {', '.join(missing)}, which nothing provides"
            )
        capability = factory(**{n: services[n] for n in names})
        for method, path, handler in capability.routes.items:
            app.router.add(method, path, handler)
        hooks.extend(capability.hooks)
        app.on_startup.extend(capability.on_startup)
        app.on_shutdown.extend(capability.on_shutdown)  # App.shutdown runs them in reverse: before the gateway's own
        services.update(capability.provides)
    return services
