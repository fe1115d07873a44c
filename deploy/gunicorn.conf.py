"""gunicorn for Signalpost: `.venv/bin/gunicorn -c deploy/gunicorn.conf.py` (from the checkout's root).

The public pages answer from the published snapshot in memory; what needs the database (subscribing,
the on-call side, the staff API) can wait on it for DATABASE_CONNECT_TIMEOUT or
DATABASE_STATEMENT_TIMEOUT seconds when it is down or hanging. With sync workers two such requests
held both workers and `/` took 33 s. Threads keep the public pages answering: a request stuck on the
database holds one thread, and the others go on serving `/` from memory. Measured in
tests/test_database_hanging.py: a database that accepts connections and never answers, 8 clients
subscribing at once, and `/` still answers with a p99 well under 1 s.

Every value can be changed with an environment variable (in the environment file of the systemd unit,
say), named beside it; gunicorn's own GUNICORN_CMD_ARGS works too.
"""

import os

wsgi_app = "statuspage.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

# Threads, not sync workers: one request waiting on the database must not hold a whole process.
worker_class = "gthread"
# Two processes a core is plenty: the public side serves bytes from memory.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Per process. At most workers × threads requests wait on a hanging database at once (each for the
# connect or statement timeout), so keep it well above the number of staff and subscribers expected
# at one time; a thread costs little memory.
threads = int(os.environ.get("GUNICORN_THREADS", "16"))

# A worker whose main loop stops answering for this long is killed and replaced. Longer than the
# database timeouts (3 s to connect, 10 s a statement by default), so a slow request is never killed
# for waiting on them.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# nginx keeps connections to gunicorn open (deploy/nginx.conf: keepalive); with gthread an idle one
# costs no thread.
keepalive = 5
# Recycle a process now and then (jittered so that both are never recycled at once).
max_requests = 10000
max_requests_jitter = 1000

# Logs to stderr (journald under systemd); the access log in the common format with the time taken
# (GUNICORN_ACCESS_LOG=off for none, or a file's path).
accesslog = None if os.environ.get("GUNICORN_ACCESS_LOG") == "off" else os.environ.get("GUNICORN_ACCESS_LOG") or "-"
errorlog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
# Behind nginx on the same host: trust its X-Forwarded-* headers (TRUST_X_FORWARDED_FOR does the rest).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
