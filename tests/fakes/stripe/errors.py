"""Stripe's error shape: ``{"error": {"type", "code", "message", "param", ...}}`` with its HTTP status."""

from __future__ import annotations

from typing import Any, Optional

DOC_URL = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    """Raised by a handler; the server answers ``status`` with ``body()``."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        code: Optional[str] = None,
        param: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra
        # Stripe records an idempotent result only once an endpoint has started executing
        # (a declined card, say), never for a request that failed validation.
        self.saved = False

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = DOC_URL + self.code
        if self.param:
            err["param"] = self.param
        err.update(self.extra)
        return {"error": err}


def invalid(message: str, param: Optional[str] = None, code: Optional[str] = None, status: int = 400) -> StripeError:
    return StripeError(status, "invalid_request_error", message, code=code, param=param)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def unknown(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def no_such(kind: str, oid: str, param: str = "id") -> StripeError:
    return invalid(f"No such {kind}: '{oid}'", param, "resource_missing", status=404)


def unrecognized_url(method: str, path: str) -> StripeError:
    return invalid(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
        "https://support.stripe.com/.",
        status=404,
    )


def auth_missing() -> StripeError:
    return invalid(
        "You did not provide an API key. You need to provide your API key in the Authorization header, using "
        "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        status=401,
    )


def auth_invalid(key: str) -> StripeError:
    shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
    return invalid(f"Invalid API Key provided: {shown}", code="api_key_invalid", status=401)


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request.",
    )
