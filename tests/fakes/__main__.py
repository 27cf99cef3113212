"""``python -m tests.fakes --port N [--workers W]``: serve the fake upstream in the foreground."""

import argparse
import os
import sys

from .runner import REPO_ROOT, free_port, granian_command


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    port = args.port or free_port(args.host)
    print(f"fake upstream on http://{args.host}:{port}", file=sys.stderr, flush=True)
    os.chdir(REPO_ROOT)
    os.execv(sys.executable, granian_command(args.host, port, args.workers))


if __name__ == "__main__":
    main()
