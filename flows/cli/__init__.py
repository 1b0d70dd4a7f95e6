"""The ``liveyield`` command: a thin layer that runs the flows and tasks and renders their results.

Every subcommand has ``--help``. Bad arguments and known failures print one line starting
with ``error:`` and exit non-zero; ``--debug`` shows the tracebacks as well.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from flows.cli import data, features, models, monitor, stack, status
from flows.cli.errors import err, quiet_console_tracebacks, report, set_debug
from tasks.ops.servers import use_stack_credentials
from tasks.settings import apply_process_defaults

app = typer.Typer(
    name="liveyield",
    help="MLOps for live-streaming monetization: simulate, import, validate and run the pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of failures (also those Prefect logs).")
    ] = False,
) -> None:
    """Options for every command."""
    set_debug(debug)


app.command()(data.simulate)
app.command("import")(data.import_)
app.command()(data.validate)
app.command()(data.demo)
app.add_typer(features.features_app, name="features")
app.command()(models.train)
app.command()(models.score)
app.command()(models.run)
app.command()(models.retrain)
app.command()(monitor.monitor)
app.command()(status.status)
app.add_typer(models.models_app, name="models")
app.command()(stack.serve)
app.command()(stack.stop)
app.command()(stack.doctor)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    apply_process_defaults()
    use_stack_credentials()  # before any client is made: a running stack's servers want them
    args = sys.argv[1:] if argv is None else argv
    set_debug("--debug" in args)  # before parsing: libraries may log while options are read
    quiet_console_tracebacks(prefect=False)
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("error: interrupted")
        return 130
    except TyperException as exc:  # usage errors: bad option values, unknown commands
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message:  # empty when a group given no command printed its help
            err.print(f"error: {message}")
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
