#!/usr/bin/env python
import os
import sys
import traceback

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statuspage.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A setting the environment got wrong (statuspage/settings.py names it): the message, not a traceback.
        frames = traceback.extract_tb(error.__traceback__)
        if not any(frame.filename.endswith(os.path.join("statuspage", "settings.py")) for frame in frames):
            raise
        sys.exit(f"Configuration error: {error}\nSee .env.example and the README's Configuration section.")
