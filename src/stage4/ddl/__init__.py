"""DDL helpers the optimisation units call: each module one kind of Postgres object.

Nothing here knows about an optimisation, the benchmark or the gate.
"""


def literal(text: str) -> str:
    """A SQL string literal, single quotes doubled (dollar quoting would break on ``$`` in
    function bodies)."""
    return "'" + text.replace("'", "''") + "'"
