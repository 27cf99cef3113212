"""Engine set-up and migrations."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import sqlite_vec
from alembic import command
from alembic.config import Config
from pysqlite3 import dbapi2 as sqlite3
from sqlalchemy import Engine, create_engine, event


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # sqlite-vec (the search index's vectors live in the same file and transactions).
    dbapi_conn.enable_load_extension(True)
    sqlite_vec.load(dbapi_conn)
    dbapi_conn.enable_load_extension(False)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten with zeros (in the page, its overflow pages and
    # freed pages), not just unlinked: erasing a thread must leave no readable copy.
    # Together with a WAL checkpoint(TRUNCATE) after the delete (ThreadStore.delete_thread).
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


class Database:
    """One engine per process; ``migrate()`` brings the schema to the newest revision."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # pysqlite3 (a newer SQLite, built with loadable extensions: Python's own sqlite3
            # here cannot load any): the same DB-API, FTS5 with secure-delete, sqlite-vec.
            self.engine: Engine = create_engine(url, module=sqlite3, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)

    def migrate(self) -> None:
        script_dir = resources.files("tollway.store").joinpath("migrations")
        cfg = Config()
        cfg.set_main_option("script_location", str(script_dir))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()
