"""`qpool`: the operator CLI.

Pulumi provisions; `qpool` performs the few stateful, safety-critical operations that must never be a side
effect of `pulumi up`, plus offline review commands (`validate`, `plan`, `render`) that need neither the
Pulumi CLI nor credentials.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from components.config import ConfigError, warnings_for
from qpool.errors import QpoolError

F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(func: F) -> F:
    """Turn expected failures into one line per problem on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            for issue in exc.issues:
                click.echo(f"error: {issue}", err=True)
            sys.exit(2)
        except QpoolError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


stack_option = click.option("--stack", "-s", "stack", required=True, help="Stack name (testnet, mainnet, ...).")
config_file_option = click.option(
    "--config-file", type=click.Path(path_type=Path, dir_okay=False),
    help="Use this stack config file instead of Pulumi.<stack>.yaml (to review a proposed config).")


@click.group()
@click.version_option(package_name="quantapool-infra")
def main() -> None:
    """QuantaPool validator operations: review, lab, activate, failover, status, keys."""


@main.command()
@stack_option
@config_file_option
@operator_errors
def validate(stack: str, config_file: Path | None) -> None:
    """Validate the stack config offline; exit 0, or 2 with one line per problem."""
    from qpool.stacks import load_stack

    loaded = load_stack(stack, config_file)
    for warning in warnings_for(loaded.config):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{loaded.path.name}: valid ({len(loaded.config.hosts())} hosts)")


@main.command()
@stack_option
@config_file_option
@click.option("--json", "as_json", is_flag=True, help="Print the resource graph as JSON.")
@operator_errors
def plan(stack: str, config_file: Path | None, as_json: bool) -> None:
    """Run the program under mocks and print every resource it would create (secrets as [secret])."""
    from qpool.review import plan_stack

    result = plan_stack(stack, config_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(result.run.plan_json(), indent=2, sort_keys=True))
        return
    from qpool.review import format_plan

    click.echo(format_plan(result.run))


@main.command()
@stack_option
@config_file_option
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory to write <host>/... files and plan.json into.")
@operator_errors
def render(stack: str, config_file: Path | None, out_dir: Path) -> None:
    """Write every file each host will receive, for review and PR diffs (offline)."""
    from qpool.review import plan_stack, render_files

    result = plan_stack(stack, config_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    written = render_files(result.run, out_dir)
    click.echo(f"wrote {len(written)} files under {out_dir}")


def _register_groups() -> None:
    """Subcommand groups that live in their own modules."""
    from qpool.keys.cli import keys

    main.add_command(keys)


_register_groups()
