#!/usr/bin/env bash
# Runs the web server, a Celery worker (default and training queues) and beat until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin
PORT=${PORT:-8000}
mkdir -p var/log
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
$PY/celery -A config worker -Q celery,training -c 1 --loglevel=INFO >var/log/worker.log 2>&1 & pids+=($!)
$PY/celery -A config beat --loglevel=INFO >var/log/beat.log 2>&1 & pids+=($!)
$PY/gunicorn config.wsgi -b 127.0.0.1:$PORT -k gthread -w 2 --threads 4 --worker-connections 64 --access-logfile var/log/access.log & pids+=($!)
echo
echo "Pairwise is running at http://127.0.0.1:$PORT/  (admin: http://127.0.0.1:$PORT/admin/, API docs: /api/docs/)"
echo "Logs in var/log/. Ctrl-C stops the web server, the worker and beat."
wait -n "${pids[@]}"
