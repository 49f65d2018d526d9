"""One session per judgement (``stage4.plumbing.db.Session``): every check borrows the same
connection, set as it expects, and leaves nothing open behind it."""

from __future__ import annotations

import psycopg
import pytest

from stage4.catalog import rpc_access, verify, visibility
from stage4.config import settings
from stage4.plumbing import migrations
from stage4.plumbing.db import Session, lend

PID = "SELECT pg_backend_pid()"


def test_every_loan_is_the_same_connection_and_ends_idle(seeded_url):
    with Session(seeded_url) as db:
        with lend(db) as conn:
            first = conn.execute(PID).fetchone()[0]
            assert not conn.autocommit
        with lend(db, autocommit=True, prepare_threshold=None) as conn:
            assert conn.execute(PID).fetchone()[0] == first
            assert conn.autocommit and conn.prepare_threshold is None
        with lend(db) as conn:
            assert conn.execute(PID).fetchone()[0] == first
            assert conn.prepare_threshold == 5  # the driver's default again
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.closed


def test_a_loan_that_raises_is_rolled_back_and_the_next_one_works(seeded_url):
    with Session(seeded_url) as db:
        with pytest.raises(RuntimeError), lend(db) as conn:
            conn.execute("CREATE TEMP TABLE lent (x int)")
            raise RuntimeError("a check failed")
        with lend(db) as conn:
            assert conn.execute("SELECT to_regclass('pg_temp.lent')").fetchone()[0] is None


def test_a_loan_commits_what_it_wrote(seeded_url):
    with Session(seeded_url) as db:
        with lend(db) as conn:
            conn.execute("CREATE TEMP TABLE kept (x int)")
        with lend(db, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('pg_temp.kept')").fetchone()[0] is not None


def test_a_judgements_checks_run_on_one_backend(seeded_url):
    """What judging lends the session to, the same as on a URL of their own."""
    s = settings()
    rev = migrations.current(seeded_url)
    with Session(seeded_url) as db:
        assert migrations.current(db) == rev
        assert verify.revision(db, s, rev) == verify.revision(seeded_url, s, rev)
        assert rpc_access.at(db, s) == rpc_access.at(seeded_url, s)
        assert visibility.at(db, s).summary() == visibility.at(seeded_url, s).summary()
        with lend(db) as conn:
            pid = conn.execute(PID).fetchone()[0]
            opened = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stage4' "
                "AND datname = current_database() AND pid <> %s",
                (pid,),
            ).fetchone()[0]
    assert opened == 0  # the URL calls closed theirs; the session's is the only one
