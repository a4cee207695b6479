"""SECRET_KEY when the environment sets none: a random key kept in var/secret_key (mode 0600).

Settings read the file; `make demo` writes it on first run (`python -m config.secret_key`), so the
demo needs no variable, while a server with DEBUG off and no key refuses to start rather than sign
sessions and password-reset links with the development key anyone can read in this repository.
No Django here: settings import it before Django is configured.
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

# Public (it is in the repository): only ever used with DEBUG on.
DEVELOPMENT_KEY = "django-insecure-pairwise-local-only"
FILE_NAME = "secret_key"


def secret_key_path(*, var_dir: Path) -> Path:
    return Path(var_dir) / FILE_NAME


def secret_key_resolve(*, environ: dict[str, str], var_dir: Path, debug: bool) -> str | None:
    """SECRET_KEY from the environment, else the key file, else the development key when DEBUG is
    on; None when the server must not start. The development key is refused with DEBUG off even
    when set on purpose."""
    key = environ.get("SECRET_KEY", "").strip()
    if not key:
        try:
            key = secret_key_path(var_dir=var_dir).read_text().strip()
        except FileNotFoundError:
            key = ""
    if key and key != DEVELOPMENT_KEY:
        return key
    return DEVELOPMENT_KEY if debug else None


def secret_key_missing_message(*, var_dir: Path) -> str:
    return (
        "SECRET_KEY is not set and DEBUG is off: Pairwise will not sign sessions with the public development key. "
        "Set SECRET_KEY to 50 or more random characters "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), or, on a single machine, "
        f"run `make demo` or `.venv/bin/python -m config.secret_key` once to write a random key to "
        f"{secret_key_path(var_dir=var_dir)} (DEBUG=1 runs on the development key)."
    )


def secret_key_write(*, var_dir: Path) -> bool:
    """Write a random key to the key file unless it exists; True when written. Created with
    O_EXCL and mode 0600, so two first runs at once keep one key and no other user can read it."""
    path = secret_key_path(var_dir=var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(50) + "\n")
    return True


def main() -> None:
    # PAIRWISE_VAR_DIR as config.settings reads it; a SECRET_KEY in the environment needs no file.
    var_dir = Path(os.environ.get("PAIRWISE_VAR_DIR", Path(__file__).resolve().parent.parent / "var")).resolve()
    if os.environ.get("SECRET_KEY", "").strip():
        return
    if secret_key_write(var_dir=var_dir):
        print(f"Wrote a random SECRET_KEY to {secret_key_path(var_dir=var_dir)} (mode 0600).", file=sys.stderr)


if __name__ == "__main__":
    main()
