"""HTTP layer: a framework-free core (``core``) and thin server adapters (``asgi``)."""
