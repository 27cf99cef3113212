"""Settings of the slow- and silent-client limits (README, "Limits and timeouts")."""

from __future__ import annotations

import pytest

from tollway.config import ConfigError, load_settings
from tollway.config.settings import max_connections_for


def test_defaults() -> None:
    s = load_settings({})
    assert (s.stream_window_bytes, s.client_stall_timeout, s.header_timeout, s.body_timeout, s.max_connections) == (
        256 * 1024,
        60.0,
        10.0,
        30.0,
        0,
    )


def test_values_from_the_environment() -> None:
    s = load_settings(
        {
            "TOLLWAY_STREAM_WINDOW_KB": "64",
            "TOLLWAY_CLIENT_STALL_TIMEOUT": "2.5",
            "TOLLWAY_HEADER_TIMEOUT": "3",
            "TOLLWAY_BODY_TIMEOUT": "4",
            "TOLLWAY_MAX_CONNECTIONS": "1000",
        }
    )
    assert (s.stream_window_bytes, s.client_stall_timeout, s.header_timeout, s.body_timeout, s.max_connections) == (
        64 * 1024,
        2.5,
        3.0,
        4.0,
        1000,
    )
    assert max_connections_for(s, 20000) == 1000


@pytest.mark.parametrize(
    "name,value",
    [
        ("TOLLWAY_STREAM_WINDOW_KB", "0"),
        ("TOLLWAY_STREAM_WINDOW_KB", "lots"),
        ("TOLLWAY_CLIENT_STALL_TIMEOUT", "0"),
        ("TOLLWAY_CLIENT_STALL_TIMEOUT", "-1"),
        ("TOLLWAY_HEADER_TIMEOUT", "nan"),
        ("TOLLWAY_BODY_TIMEOUT", "1e9"),
        ("TOLLWAY_MAX_CONNECTIONS", "-5"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_connection_limit_from_the_fd_limit() -> None:
    s = load_settings({})
    # Half of what the reserve leaves (a stream holds two fds), at most 16,384.
    assert max_connections_for(s, 20000) == (20000 - 2500) // 2
    assert max_connections_for(s, 1024) == (1024 - 256) // 2
    assert max_connections_for(s, 1 << 20) == 16384
    # A setting past the fd limit is cut to it: beyond, granian's accept loop spins on EMFILE.
    assert max_connections_for(load_settings({"TOLLWAY_MAX_CONNECTIONS": "30000"}), 20000) == 20000 - 2500
