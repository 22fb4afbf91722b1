"""The connection layer's own guarantees (no database needed)."""
import psycopg
from psycopg.adapt import PyFormat

from conveyor_client import _db


def test_import_resolves_psycopg_dumpers_registered_by_name():
    # psycopg resolves these lazily in its shared map without a lock; two worker threads doing it at
    # once failed an ack with KeyError('uuid.UUID'). Importing the client resolves them up front.
    for fmt in PyFormat:
        by_name = {k for k in psycopg.adapters._dumpers[fmt] if isinstance(k, str)}
        for cls in _db.BY_NAME_TYPES:
            assert f"{cls.__module__}.{cls.__qualname__}" not in by_name, (cls, fmt)
