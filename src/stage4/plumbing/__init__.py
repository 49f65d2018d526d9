"""The database plumbing: connections, the embedded cluster and the client programs,
Alembic driven from Python and where it keeps the revision, lock timeouts explained and
retried, interrupts, the app's writes counted, sample data and the hand-run refresh."""
