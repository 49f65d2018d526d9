"""The ``stage4`` command line: parses, prints, exits. No SQL here.

``app`` holds the command groups, the global options and the edge where errors become one
line and an exit code (``--debug`` shows the traceback instead); the commands are grouped
as the library is: the database (``database``), the rollout (``rollout``) and the
measuring instrument (``measure``).
"""

# Each module registers its commands; the order of these imports is `stage4 --help`'s.
# isort: off
from stage4.cli import rollout
from stage4.cli import measure
from stage4.cli import database

# isort: on
from stage4.cli.app import app, main
from stage4.cli.rollout import JUDGING

__all__ = ["JUDGING", "app", "database", "main", "measure", "rollout"]
