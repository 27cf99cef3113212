"""Grow a process's fd table up front (for the fake upstream and the benchmark client).

Linux doubles a process's fd table when a new fd does not fit (at 64, 128, 256 ...
4,096 open fds). In a multi-threaded process that waits for an RCU
grace period: 20-55 ms here, during which nothing in the process opens a socket.
A load generator that stalls like that then fires its delayed connects in one
burst, which is not the steady open rate it reports. Growing the table once at
start-up (one dup to just below the open-file limit, closed at once) avoids it.
The same fix as ``tollway.gateway.reserve_fd_table``; the fakes stand in for the
outside world and do not import the gateway.
"""

from __future__ import annotations

import fcntl
import os
import resource

MAX_RESERVED = 1 << 16


def reserve_fd_table() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    size = MAX_RESERVED if soft == resource.RLIM_INFINITY else min(soft, MAX_RESERVED)
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, size - 1))
    except OSError:
        pass
    finally:
        os.close(fd)
