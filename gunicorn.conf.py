"""Production defaults for ``gunicorn wsgi:app`` (read from the working directory).

Every value can be overridden on the command line or with ``GUNICORN_CMD_ARGS``; the few
environment variables below exist because platforms set them.
"""

import ctypes
import gc
import multiprocessing
import os

# $PORT is what most platforms hand a web process; gunicorn's own default otherwise.
bind = [f"0.0.0.0:{os.environ['PORT']}"] if os.environ.get("PORT") else ["127.0.0.1:8000"]

# Handlers do I/O-bound work (email, storage, webhooks): more workers than cores.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))

# A sync worker serves one connection from its first byte to its last, so it must sit
# behind a proxy that reads whole requests and answers before passing them on (nginx:
# deploy/nginx.conf). Exposed directly, as many clients as there are workers sending half
# a request hold every worker until `timeout` kills it (tests/test_deploy_nginx.py shows
# it). gthread is no way out: its thread pool is fixed too, workers x threads such
# clients do the same. X-Forwarded-Proto is believed from 127.0.0.1 and ::1 only
# (gunicorn's default, or FORWARDED_ALLOW_IPS); signatures never depend on it (APP_URL).
worker_class = "sync"

# A worker is killed after this long on one request. QStash aborts a delivery after its
# Upstash-Timeout and retries it: keep this at least as long as the longest job timeout,
# or a slow job is killed here while QStash still waits.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5

# Logs go to stdout/stderr, where process managers collect them.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

# Import the app before forking: configuration errors stop the master at once with one
# line, and workers share the imported code.
preload_app = True


def pre_fork(server, worker):
    # Python's cyclic GC writes into every object it examines, so a worker's first full
    # collection would copy all the pages it shares with the master: frozen objects are
    # never examined. -20 MiB private per worker after 500 deliveries (bench/worker_memory.py).
    gc.freeze()


# glibc's malloc raises its mmap threshold up to 32 MiB after freeing one large block,
# and keeps later large blocks (decoded images) in the heap once freed: +60 MiB per worker
# after 20 image jobs, never returned. A fixed threshold hands them back when freed.
_M_MMAP_THRESHOLD = -3
try:
    ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
except (AttributeError, OSError):  # not glibc: its allocator has its own rules
    pass

# /metrics adds up every worker's samples (prometheus-client's multiprocess mode): the
# directory must be known before the app, and prometheus_client, are imported.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    _own_metrics_dir = tempfile.mkdtemp(prefix="qstash-jobs-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_starting(server):
    from app.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def child_exit(server, worker):
    from app.metrics import worker_exited

    worker_exited(worker.pid)


def on_exit(server):
    if "_own_metrics_dir" in globals():
        import shutil

        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


# LOG_FORMAT=json: gunicorn's own lines are JSON too (the app's follow app.config).
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    from app.log_format import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig()
