"""The error raised for a request that cannot be expressed in the other wire format."""

from __future__ import annotations

from typing import Optional


class TranslationError(Exception):
    """A request (or upstream body) we cannot translate; the caller answers HTTP 400.

    ``param`` names the offending field (``messages[2].content[0]``) when known.
    """

    def __init__(self, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return f"{self.param}: {self.message}" if self.param else self.message
