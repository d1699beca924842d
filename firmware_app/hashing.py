"""sha256, the trap's one notion of identity: of a frame in the ledger, a model in its card, a burst
and an event. One place, so every part hashes the same bytes the same way."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """A file name that is not UTF-8 (its bytes held as surrogates, as os.fsdecode gives them)
    hashes as those bytes; any other text as its UTF-8."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
