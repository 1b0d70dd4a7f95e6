"""The command line's one error path: a failure becomes one ``error:`` line and a non-zero exit.

Without ``--debug`` no traceback reaches the console, neither ours nor the one Prefect's engine
logs when a flow run in this process fails; the run's logs in the Prefect API keep the full
trace. With ``--debug`` every traceback is shown.
"""

from __future__ import annotations

import logging
import sys
import traceback

from rich.console import Console

err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


class CliError(Exception):
    """A failure the user can act on; its message is printed after ``error:``."""


class _Options:
    """Global options of this invocation."""

    debug = False


def set_debug(on: bool) -> None:
    """Show tracebacks (ours and Prefect's console logs) for this invocation."""
    _Options.debug = on


def debugging() -> bool:
    """Whether --debug was given."""
    return _Options.debug


def describe(exc: BaseException) -> str | None:
    """The line for a known failure (None for a bug)."""
    from tasks.errors import loaded_exceptions, user_facing

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, loaded_exceptions("flows.build_features", "FeatureBuildError")):
        return f"feature build failed: {exc}"
    if isinstance(exc, loaded_exceptions("flows.models", "PipelineFailed")):
        return str(exc)
    return user_facing(exc)


def report(exc: BaseException) -> int:
    """Print the one ``error:`` line for a failure (the traceback too with --debug); the exit code."""
    message = describe(exc)
    if debugging():
        traceback.print_exception(exc, file=sys.stderr)
    if message is None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"unexpected {type(exc).__name__}: {first} (a bug? rerun with --debug for the traceback)"
    err.print(f"error: {message}")
    return 1


class _WithoutTraceback(logging.Formatter):
    """Formats a record as its handler's own formatter does, minus any traceback or stack."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks(*, prefect: bool = True) -> None:
    """Keep tracebacks out of the console log handlers (Prefect's included) unless --debug.

    Call before running a flow in-process: Prefect's engine logs a failed run's traceback to
    the console as well as to the API. Only the console handlers change; the API handler,
    which keeps the trace in the run's logs and the UI, is left alone. ``prefect=False`` skips
    importing Prefect (whose import sets up its handlers) and covers the other libraries' logs.
    """
    if debugging():
        return
    if prefect:
        import prefect as _prefect  # noqa: F401  (configures Prefect's logging, wrapped below)
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    handlers = [handler for logger in loggers for handler in logger.handlers]
    if logging.lastResort is not None:  # what logs to when no handler is configured
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _is_console(handler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the terminal: Prefect's console handlers or a stream on stdout/stderr."""
    if type(handler).__module__.startswith("prefect") and hasattr(handler, "console"):
        return True
    terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return isinstance(handler, logging.StreamHandler) and handler.stream in terminal
