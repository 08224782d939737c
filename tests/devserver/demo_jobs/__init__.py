"""Stand-ins for the real send-email, process-image and deliver-webhook jobs, so that
``flask dev --demo`` is tested on its own (``JOBS_PACKAGES=tests.devserver.demo_jobs``)."""
