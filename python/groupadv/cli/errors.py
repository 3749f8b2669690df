"""The two ways a command ends early: a user error, or a signal."""

from __future__ import annotations

import signal


class CLIError(Exception):
    """A user error: printed as ``groupadv: error: ...`` with exit status 2."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while ``compute`` ran (a BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` swallows it on its way to the clean-up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
