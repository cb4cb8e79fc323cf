"""One root exception, with a local/remote split (see STYLE.md habit 7).

Users see ``str(exc)``: one line, never a traceback.
"""

from __future__ import annotations


class MifdnsError(Exception):
    """Root of every error mifdns raises on purpose."""


class ConfigError(MifdnsError):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + p for p in self.problems))


class StartupError(MifdnsError):
    """The daemon cannot start (a socket cannot be bound, a capability is missing)."""


class ControlError(MifdnsError):
    """A control command failed: the daemon is unreachable or refused the command."""
