"""The one error a configuration can raise, and the exit status that says so.

Every reader of the configuration (the file, each table, the entry points) raises
:class:`ConfigError`, so it sits below them all: the CLI catches one type and exits
:data:`EX_CONFIG`, which the systemd unit does not restart on.
"""

from __future__ import annotations

__all__ = ["EX_CONFIG", "ConfigError"]

EX_CONFIG = 78
"""sysexits.h: configuration error. The unit sets RestartPreventExitStatus=78."""


class ConfigError(Exception):
    """A configuration that cannot run; ``str()`` names the key path and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason
