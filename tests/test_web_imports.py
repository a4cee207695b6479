"""Web and beat processes never load torch or transformers: every URL's view (and what it imports at
module level) is plain Django. A heavy import there would cost each web worker seconds at start and
hundreds of MB; the training code is imported inside the functions that need it."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.paths import REPO


def test_loading_every_url_and_the_celery_app_imports_no_torch():
    code = (
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "import django; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import config.celery, training.tasks, labeling.tasks;"
        "import training.apis.runs;"  # the evaluation API parses uploads with training.ml.preference_file
        "print(sorted(m for m in ('torch', 'transformers', 'training.ml.reward') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
