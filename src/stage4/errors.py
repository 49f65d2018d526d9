"""The few errors stage4 raises; the CLI turns each into one line and an exit code."""


class Stage4Error(Exception):
    """Base of every error stage4 reports to the user (exit code 1 unless overridden)."""

    exit_code = 1


class ConfigError(Stage4Error):
    """Bad configuration or input: a malformed URL, an unknown target, a bad option."""

    exit_code = 2


class ConnectError(Stage4Error):
    """The database cannot be reached or refuses us."""


class ClusterError(Stage4Error):
    """The embedded PostgreSQL cluster cannot be created, started or stopped."""


class PreflightError(Stage4Error):
    """The database does not meet what a migration needs; nothing was changed."""


class MigrationError(Stage4Error):
    """A migration step failed; the message says what state the database is in."""


class GateError(Stage4Error):
    """A NO-GO verdict: the step was rolled back."""

    exit_code = 3
