"""Test jobs for the end-to-end retry tests (``JOBS_PACKAGES=tests.devserver.jobs_fixture``).

Each job appends what it saw to ``$FIXTURE_STATE_DIR/<job>.jsonl``, so the test process can
read what the app under gunicorn received.
"""
