"""A local fake Stripe for tests, driven by stripe-python (see tests/fakes/README.md)."""

from .errors import StripeError
from .fake import DEFAULT_API_KEY, FakeStripe, start_fake_stripe
from .webhooks import sign

__all__ = ["DEFAULT_API_KEY", "FakeStripe", "StripeError", "sign", "start_fake_stripe"]
