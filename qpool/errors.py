"""Errors that the CLI turns into one clear line and a non-zero exit, without a traceback."""


class QpoolError(Exception):
    """An operator-facing error: the message names the input or host at fault and what to do."""

    exit_code = 2
