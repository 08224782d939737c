"""gunicorn settings of a benchmark's bare side, passed with ``--config`` explicitly.

Without ``--config`` gunicorn reads ``./gunicorn.conf.py`` from the working directory (the
project's production settings: access log, preload), so a "bare" run would silently not
be bare. These are gunicorn's own defaults, spelled out; workers, bind and log level come
from the command line.
"""

worker_class = "sync"
accesslog = None
preload_app = False
