"""User-facing errors.

A :class:`ReprlabError` is an expected failure caused by bad input (a missing file, a wrong
config value, a corrupt archive, a diverging run). The CLI prints its message as one line and
exits non-zero without a traceback; everything else is a bug and keeps its traceback.
"""


class ReprlabError(Exception):
    """An error whose message is complete on one line and meant for the user."""

    exit_code = 2


class NonFiniteLossError(ReprlabError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""

    exit_code = 3
