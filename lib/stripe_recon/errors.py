"""Exceptions that the CLI turns into exit codes (see design: 1 error, 2 usage or config, 3 held)."""


class ReconError(Exception):
    """An error the user can act on. The message says what happened and what to do."""

    exit_code = 1


class ConfigError(ReconError):
    """A configuration key or value is wrong; the message names the key path and what is allowed.
    Exit 2, like a usage error (design.md, "CLI")."""

    exit_code = 2


class InputError(ReconError):
    """An input is missing, empty or unreadable; the message names the path."""


class HeldError(ReconError):
    """A gate or guard held the run: nothing downstream ran and nothing was pushed."""

    exit_code = 3
