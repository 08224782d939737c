"""Workflows the end-to-end tests run under gunicorn (``JOBS_PACKAGES=tests.workflows.flows``).

Never imported by the test process itself: only gunicorn's app discovers them, so the
default job registry of the test process stays as the other tests expect.
"""
