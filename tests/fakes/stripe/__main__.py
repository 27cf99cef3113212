"""``python -m tests.fakes.stripe [--port N] [--api-key sk_test_...]``: serve the fake Stripe in the foreground
(controls over HTTP under /_fake/)."""

import argparse
import sys
import threading

from .fake import DEFAULT_API_KEY, start_fake_stripe


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.stripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    fake = start_fake_stripe(args.api_key, args.host, args.port)
    print(f"fake Stripe on {fake.url} (key {fake.api_key})", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
