"""Jobs for the operations end-to-end tests under gunicorn."""
