"""Symmetric keys kept in files: the secrets' master key, the customers' links' key.

Made on first use (32 random bytes, readable by the owner only) so `make run` works on a
fresh clone; in production they are provisioned like any other secret and the files
mounted read-only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path, size: int = 32) -> bytes:
    if path.exists():
        key = path.read_bytes()
        if len(key) != size:
            raise ValueError(f"{path} holds {len(key)} bytes, not {size}: restore the right key file")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(size)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return load_or_create_key(path, size)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
    return key
