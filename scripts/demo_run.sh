#!/usr/bin/env bash
# Runs the web server, two Celery workers and beat until Ctrl-C: one worker takes the default queue
# (exports, schedule checks, the reaper, other short jobs) and one the training queue
# (config/settings.py CELERY_TASK_ROUTES), so an hour of training never holds up an export.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin
PORT=${PORT:-8000}
mkdir -p var/log
$PY/python -m config.secret_key  # the key `make demo` writes, when this script is run on its own
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
$PY/celery -A config worker -Q celery -c 1 -n short@%h --loglevel=INFO >var/log/worker.log 2>&1 & pids+=($!)
$PY/celery -A config worker -Q training -c 1 -n training@%h --loglevel=INFO >var/log/worker-training.log 2>&1 & pids+=($!)
$PY/celery -A config beat --loglevel=INFO >var/log/beat.log 2>&1 & pids+=($!)
$PY/gunicorn config.wsgi -b 127.0.0.1:$PORT -k gthread -w 2 --threads 4 --worker-connections 64 --access-logfile var/log/access.log & pids+=($!)
echo
echo "Pairwise is running at http://127.0.0.1:$PORT/  (admin: http://127.0.0.1:$PORT/admin/, API docs: /api/docs/)"
echo "Logs in var/log/ (worker.log: short jobs, worker-training.log: training). Ctrl-C stops the web server, the workers and beat."
wait -n "${pids[@]}"
