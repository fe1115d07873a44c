"""The web process (gunicorn statuspage.wsgi, with deploy/gunicorn.conf.py).

It marks itself as the web process before the settings load, so that on PostgreSQL its statements end
after DATABASE_STATEMENT_TIMEOUT seconds (statuspage/settings.py); workers and commands have no limit.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statuspage.settings")
marked = "SIGNALPOST_PROCESS" not in os.environ
os.environ.setdefault("SIGNALPOST_PROCESS", "web")
application = get_wsgi_application()  # loads the settings, which read the mark
if marked:
    del os.environ["SIGNALPOST_PROCESS"]  # not inherited by anything this process starts
