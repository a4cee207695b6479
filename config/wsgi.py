import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Import the URLconf, and with it every view, now: under gunicorn --preload the master pays this
# once, so a respawned worker answers its first request at once rather than after seconds of imports.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns
