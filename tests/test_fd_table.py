"""tollway.gateway.reserve_fd_table: the fd table grown once at start-up."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from tollway.gateway import reserve_fd_table


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_grows_to_the_limit_and_leaves_no_fd_open() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = _open_fds()
    size = reserve_fd_table()
    assert size == min(soft, 1 << 16)
    assert _open_fds() == before


def test_the_table_really_grew() -> None:
    """/proc/self/status's FDSize is the table's size: at least the limit after the call."""
    code = (
        "import re, resource\n"
        "from tollway.gateway import reserve_fd_table\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "limit = 5000 if hard == resource.RLIM_INFINITY else min(5000, hard)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))\n"
        "size = lambda: int(re.search(r'FDSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "before = size()\n"
        "assert reserve_fd_table() == limit\n"
        "print(before, size(), limit)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, limit = (int(v) for v in out)
    assert before < limit <= after
