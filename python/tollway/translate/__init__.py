"""Helpers shared by the wire-format converters (providers/*_convert.py, providers/*_stream.py).

Field checks that raise TranslationError naming the field (checks.py), error
types and bodies of each format (error_bodies.py), response and tool-call ids
(ids.py) and SSE framing (sse.py). Translation itself goes source -> canonical
-> target through providers/canonical.py and providers/formats.py.
"""

from tollway.translate.errors import TranslationError

__all__ = ["TranslationError"]
