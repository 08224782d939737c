"""Jobs mounted by the end-to-end tests (JOBS_PACKAGES=tests.e2e_jobs)."""
