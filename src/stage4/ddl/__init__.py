"""DDL helpers the revisions call: each module one kind of Postgres object.

Nothing here knows about the benchmark or the gate.
"""
