"""The SQLAlchemy engine behind the store: URL defaults, SQLite pragmas, PostgreSQL driver.

SQLite runs in WAL mode (readers never block the writer) with ``synchronous=NORMAL`` and
a busy timeout; every write transaction starts with ``BEGIN IMMEDIATE`` so that two
processes never both read and then fight to upgrade to the write lock. ``postgres://``
and ``postgresql://`` URLs are served by psycopg 3.
"""

from __future__ import annotations

import fcntl
import functools
import operator
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.sql.compiler import SQLCompiler

from app.errors import ConfigurationError

DEFAULT_FILE = "qstash-jobs.sqlite3"
#: Pass ``execution_options(readonly=True)`` for a SQLite read that takes no write lock.
READONLY = "readonly"


@functools.cache
def _prepared(statement: Any, dialect: Dialect) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    """Return ``statement``'s SQL for ``dialect`` and a function turning a dict of its
    parameters into what the driver takes (a tuple in ``?`` order, or the dict)."""
    compiled: SQLCompiler = statement.compile(dialect=dialect)
    required = {name: None for name, bind in compiled.binds.items() if bind.required}
    fixed = dict(compiled.construct_params(required) or {})
    for name in required:
        fixed.pop(name, None)
    positions = getattr(compiled, "positiontup", None)
    order = _in_order(tuple(positions)) if positions else None

    def bind(params: dict[str, Any]) -> Any:
        values = {**fixed, **params} if fixed else params
        return order(values) if order else values

    return compiled.string, bind


def _in_order(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    # itemgetter builds the tuple in C; with one name it returns a bare value.
    getter = operator.itemgetter(*names)
    return getter if len(names) > 1 else lambda values: (getter(values),)


def execute(driver: Any, dialect: Dialect, statement: Any, params: dict[str, Any]) -> Any:
    """Run ``statement`` on a cursor of the DBAPI connection ``driver``; return the cursor.

    These statements run on every delivery: compiled once by SQLAlchemy, then executed
    directly, because SQLAlchemy's per-execution bookkeeping (even ``construct_params``)
    costs more than the SQL.
    """
    sql, bind = _prepared(statement, dialect)
    cursor = driver.cursor()
    cursor.execute(sql, bind(params))
    return cursor


def execute_many(driver: Any, dialect: Dialect, statement: Any, rows: list[dict[str, Any]]) -> Any:
    """:func:`execute` for many parameter sets at once (a batch of log rows)."""
    sql, bind = _prepared(statement, dialect)
    cursor = driver.cursor()
    cursor.executemany(sql, list(map(bind, rows)))
    return cursor


def database_url(configured: str | None, instance_path: str) -> URL:
    """Return the URL to use: ``DATABASE_URL``, or SQLite in the instance folder."""
    if not configured:
        Path(instance_path).mkdir(parents=True, exist_ok=True)
        return make_url(f"sqlite:///{Path(instance_path) / DEFAULT_FILE}")
    try:
        url = make_url(configured)
    except ArgumentError:
        raise ConfigurationError(f"DATABASE_URL is not a database URL: {configured!r}") from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "DATABASE_URL: an in-memory SQLite database is private to one connection;"
            " use a file (sqlite:////path/to/file.sqlite3)"
        )
    return url


def make_engine(url: URL) -> Engine:
    """Create the engine for ``url`` with this store's connection settings."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        if url.get_backend_name() == "postgresql":
            return _postgresql_engine(url)
        return create_engine(url, pool_pre_ping=True, pool_recycle=1800)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigurationError(
            f"DATABASE_URL needs a driver that is not installed ({exc}); for PostgreSQL"
            " install the `postgres` extra (psycopg)"
        ) from None


def _postgresql_engine(url: URL) -> Engine:
    engine = create_engine(url, pool_pre_ping=True, pool_recycle=1800)
    if "synchronous_commit" in str(url.query):
        return engine  # the URL chose (e.g. ?options=-csynchronous_commit%3Don)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # A commit returns before its WAL record reaches the disk (PostgreSQL still
        # never corrupts): only a *server* crash can lose the last ~0.6 s of claims and
        # log rows. That trade keeps the guard's two commits per delivery cheap.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        dbapi_connection.commit()

    return engine


def _sqlite_engine(url: URL) -> Engine:
    if url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get(READONLY, False)
        # Straight to the driver: a full SQLAlchemy execution here would double the cost
        # of the short transactions the guard runs per delivery.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN" if readonly else "BEGIN IMMEDIATE"
        )

    _WRITE_LOCKS[engine] = _FileLock(str(url.database) + ".lock")
    return engine


class _FileLock:
    """An exclusive lock on a file, shared by this host's processes and threads.

    SQLite's busy handler sleeps 1, 2, 5, 10… ms when the write lock is taken; with
    several gunicorn workers writing, those sleeps would dominate. Queuing on ``flock``
    wakes the next writer as soon as the lock is free.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd = -1
        self._pid = -1

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._pid != os.getpid():  # a forked child must not share the parent's lock
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _FileLock] = weakref.WeakKeyDictionary()


def write_lock(engine: Engine) -> AbstractContextManager[None]:
    """Return the context that queues behind this host's other writers (SQLite), or none."""
    lock = _WRITE_LOCKS.get(engine)
    return lock.held() if lock is not None else nullcontext()


def write_when_quiet(
    stop: threading.Event, delay: float, latest: Callable[[], float], write: Callable[[], None]
) -> None:
    """Run ``write`` every ``delay`` seconds in which nothing new arrived, until ``stop``.

    The body of the idle threads of the delivery log and of the duplicate guard. While
    requests come, their ``close`` writes; this thread writes only for a quiet process.
    A write here, from a second thread, would hand the GIL back and forth with the
    request thread at every SQLite call and hold the write lock many times longer than
    the write takes (measured: +50-100 us per request). It polls rather than being woken
    per arrival for the same reason. ``latest`` returns when the last item arrived
    (``time.monotonic()``).
    """
    while not stop.wait(delay):
        if time.monotonic() - latest() >= delay:
            write()


def start_quiet_writer(
    name: str, delay: float, latest: Callable[[], float], write: Callable[[], None]
) -> threading.Event:
    """Start a daemon thread running :func:`write_when_quiet`; return the event that
    stops it."""
    stop = threading.Event()
    threading.Thread(
        target=write_when_quiet, args=(stop, delay, latest, write), name=name, daemon=True
    ).start()
    return stop


def call_in_forked_children(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child this process forks from now on.

    A hook rather than a ``getpid()`` per call; weak, so that it keeps nothing alive.
    """
    ref = weakref.WeakMethod(method)
    os.register_at_fork(after_in_child=lambda: (alive := ref()) and alive())


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """Open a write transaction; on SQLite, queue behind this host's other writers first."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    with lock.held(), engine.begin() as conn:
        yield conn


def forget_connections_after_fork(engine: Engine) -> None:
    """Drop pooled connections inherited from a parent process (gunicorn's preload)."""
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)
