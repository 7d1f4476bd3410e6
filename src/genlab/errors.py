"""One exception type for every problem a user can fix.

The CLI prints ``GenlabError`` as a single line (``genlab: <problem> — fix: <fix>``)
and exits with status 2; anything else is a bug and keeps its traceback.
"""


class GenlabError(Exception):
    """A user-fixable problem: bad config, missing/corrupt file, diverged training."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem} — fix: {fix}" if fix else problem)


class ConfigError(GenlabError):
    """The composed configuration is invalid (unknown key, wrong type, bad value)."""
