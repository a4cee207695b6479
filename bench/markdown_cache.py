"""Memory the markdown render cache keeps after many distinct long texts (prompts, responses, previews).

    .venv/bin/python bench/markdown_cache.py [--bodies 200] [--chars 20000]

Prints JSON: how much text was rendered, what stays allocated afterwards (tracemalloc) and the
budget (PAIRWISE_MARKDOWN_CACHE_BYTES). Each process holds at most the budget plus bookkeeping.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.report import emit  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # serves no request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=200)
    parser.add_argument("--chars", type=int, default=20_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from labeling.selectors.queue import markdown_render

    markdown_render("warm *up*")
    line = "A sentence of an answer with one **bold** word in it, as responses have.\n\n"
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for i in range(args.bodies):
        markdown_render(f"# body {i}\n\n" + line * (args.chars // len(line)))
    seconds = time.perf_counter() - started
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    emit({
        "bodies": args.bodies, "chars_each": args.chars,
        "rendered_mb": round(args.bodies * args.chars / 2**20, 1),
        "retained_mb": round(retained / 2**20, 2),
        "budget_mb": round(getattr(settings, "PAIRWISE_MARKDOWN_CACHE_BYTES", 0) / 2**20, 2),
        "seconds": round(seconds, 1),
    }, indent=None)


if __name__ == "__main__":
    main()
