"""Fixtures: the database to test against comes from the environment.

CONVEYOR_TEST_DSN        a direct conninfo to a database with the conveyor extension (required)
CONVEYOR_TEST_POOL_DSN   the conninfo the workers and producers use for their calls, e.g. pgbouncer in
                         transaction mode in front of the same database (default: CONVEYOR_TEST_DSN)
"""
import os
import sys
import uuid

import psycopg
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="session")
def direct_dsn():
    dsn = os.environ.get("CONVEYOR_TEST_DSN")
    if not dsn:
        pytest.fail("CONVEYOR_TEST_DSN is not set")
    return dsn


@pytest.fixture(scope="session")
def pool_dsn(direct_dsn):
    return os.environ.get("CONVEYOR_TEST_POOL_DSN") or direct_dsn


@pytest.fixture
def db(direct_dsn):
    """A direct autocommit connection for setting up and checking."""
    with psycopg.connect(direct_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_queue(db):
    """make_queue(options) -> a fresh queue's name; dropped with its jobs afterwards."""
    made = []

    def make(options="{}"):
        name = f"py_{uuid.uuid4().hex[:10]}"
        db.execute("SELECT conveyor.create_queue(%s, %s::jsonb)", (name, options))
        made.append(name)
        return name

    yield make
    for name in made:
        db.execute("SELECT conveyor.drop_queue(%s, force => true)", (name,))
