"""gunicorn for Signalpost: `.venv/bin/gunicorn -c deploy/gunicorn.conf.py` (from the checkout's root).

The public pages answer from the published snapshot in memory; what needs the database (subscribing,
the on-call side, the staff API) can wait on it for DATABASE_CONNECT_TIMEOUT or
DATABASE_STATEMENT_TIMEOUT seconds when it is down or hanging. With sync workers two such requests
held both workers and `/` took 33 s. Threads keep the public pages answering: a request stuck on the
database holds one thread, and the others go on serving `/` from memory. Measured in
tests/test_database_hanging.py: a database that accepts connections and never answers, 8 clients
subscribing at once, and `/` still answers with a p99 well under 1 s.

Every value can be changed with an environment variable named beside it (in the environment, the
systemd unit's environment file, or the .env file beside manage.py, read here as the settings read
it: the environment wins); gunicorn's own GUNICORN_CMD_ARGS works too.
"""

import os
from pathlib import Path


def read_dotenv(path: Path) -> None:
    """KEY=value lines of .env into the environment, variables already set winning (statuspage/settings.py
    reads the same file the same way, once Django starts in each worker; this file is read before that)."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.strip().isidentifier() and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            os.environ.setdefault(key.strip(), value)


read_dotenv(Path(__file__).resolve().parent.parent / ".env")


def env(name: str, default: str) -> str:
    """The variable's value; empty counts as unset, as in statuspage/settings.py."""
    return os.environ.get(name, "").strip() or default


wsgi_app = "statuspage.wsgi:application"
bind = env("GUNICORN_BIND", "127.0.0.1:8000")

# Threads, not sync workers: one request waiting on the database must not hold a whole process.
worker_class = "gthread"
# Two processes a core is plenty: the public side serves bytes from memory.
workers = int(env("WEB_CONCURRENCY", "2"))
# Per process. At most workers × threads requests wait on a hanging database at once (each for the
# connect or statement timeout), so keep it above the number of staff and subscribers expected at one
# time. More is not free: the threads of a process share its interpreter lock, and with 256 readers
# on / (bench/faults.py, 2 cores) the slowest answer took 983 ms with 16 threads, 776 ms with 8 and
# 622 ms with 4; 8 leaves half the threads serving / while 8 requests wait on a hanging database.
threads = int(env("GUNICORN_THREADS", "8"))

# A worker whose main loop stops answering for this long is killed and replaced. Longer than the
# database timeouts (3 s to connect, 10 s a statement by default), so a slow request is never killed
# for waiting on them.
timeout = int(env("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# nginx keeps connections to gunicorn open (deploy/nginx.conf: keepalive); with gthread an idle one
# costs no thread.
keepalive = 5
# Recycle a process now and then (jittered so that both are never recycled at once).
max_requests = 10000
max_requests_jitter = 1000

# Logs to stderr (journald under systemd); the access log in the common format with the time taken
# (GUNICORN_ACCESS_LOG=off for none, or a file's path).
accesslog = None if env("GUNICORN_ACCESS_LOG", "-") == "off" else env("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
# Behind nginx on the same host: trust its X-Forwarded-* headers (TRUST_X_FORWARDED_FOR does the rest).
forwarded_allow_ips = env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
