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
    # Written whole under another name, then linked into place: a process starting at the
    # same moment sees no file or the whole key, never half of one, and one key wins.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(secrets.token_bytes(size))
    try:
        os.link(draft, path)
    except FileExistsError:  # another process made it first: use theirs
        pass
    finally:
        draft.unlink()
    return load_or_create_key(path, size)
