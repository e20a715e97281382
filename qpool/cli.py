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

from core.config import ConfigError, deployment_issues, warnings_for
from qpool.errors import QpoolError
from qpool.secret_files import command_lifetime

F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(func: F) -> F:
    """Turn expected failures into one line per problem on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with command_lifetime():  # the deploy key copy read from stack outputs never outlives the command
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

    loaded = load_stack(stack, config_file, preflight=True)
    for warning in warnings_for(loaded.config):
        click.echo(f"warning: {warning}", err=True)
    if issues := deployment_issues(loaded.config):  # mainnet: no page, no heartbeat -> no deploy
        raise ConfigError(issues)
    click.echo(f"{loaded.path.name}: valid ({len(loaded.config.hosts())} hosts)")


@main.command()
@stack_option
@config_file_option
@click.option("--json", "as_json", is_flag=True, help="Print the resource graph as JSON.")
@click.option("--diff", "old_plan", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A `qpool plan --json` saved from main: print which resources and host files change (a PR's "
                   "offline preview, next to `pulumi preview`).")
@operator_errors
def plan(stack: str, config_file: Path | None, as_json: bool, old_plan: Path | None) -> None:
    """Run the program under mocks and print every resource it would create (secrets as [secret])."""
    from qpool.review import plan_stack

    result = plan_stack(stack, config_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if old_plan is not None:
        from qpool.plan_diff import format_plan_diff

        try:
            old_doc = json.loads(old_plan.read_text())
            if not isinstance(old_doc.get("resources"), list):
                raise ValueError("no resources")
        except (ValueError, AttributeError):
            raise QpoolError(f"{old_plan}: not a `qpool plan --json` document; save one from main with "
                             f"`qpool plan --stack {stack} --json > main-plan.json`") from None
        click.echo(format_plan_diff(old_doc, result.run, str(old_plan)))
        return
    if as_json:
        from qpool.review import plan_document

        click.echo(json.dumps(plan_document(result.run), indent=2, sort_keys=True))
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


inventory_option = click.option(
    "--inventory", type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Inventory JSON (hosts, SSH key, pinned host keys); default: $QPOOL_INVENTORY, the lab's, or Pulumi outputs.")
pair_option = click.option("--pair", "-p", "pairs", multiple=True, help="Validator pair (default: every pair).")


def _context(stack: str, inventory: Path | None, yes: bool = True, progress: str = "auto") -> Any:
    import os

    from qpool.inventory import resolve_inventory
    from qpool.operations import Context
    from qpool.progress import make_progress
    from qpool.stacks import stack_file

    inv = resolve_inventory(stack, inventory)
    client = None
    token_file = inv.extra.get("hcloud_token_file")
    if not os.environ.get("HCLOUD_FENCING_TOKEN") and token_file and Path(token_file).exists():
        os.environ["HCLOUD_FENCING_TOKEN"] = Path(token_file).read_text().strip()  # the lab's fake API
    if os.environ.get("HCLOUD_FENCING_TOKEN"):
        from qpool.hetzner import make_client

        client = make_client(endpoint=inv.hcloud_endpoint)

    def confirm(message: str) -> bool:
        return yes or click.confirm(message, default=False)

    journal_dir = Path(inv.extra["journal_dir"]) if inv.extra.get("journal_dir") else None
    return Context(inventory=inv, config_file=inv.config_file or stack_file(stack), report=make_progress(progress),
                   confirm=confirm, hcloud=client, journal_dir=journal_dir)


def _pairs(ctx: Any, pairs: tuple[str, ...]) -> list[str]:
    return list(pairs) or ctx.inventory.pairs()


@main.command()
@stack_option
@inventory_option
@pair_option
@click.option("--json", "as_json", is_flag=True)
@operator_errors
def status(stack: str, inventory: Path | None, pairs: tuple[str, ...], as_json: bool) -> None:
    """Per pair: who signs, locks, units, processes, sync, newest slashing-protection backup."""
    from qpool.status import format_status, pair_status

    ctx = _context(stack, inventory)
    doc = {"stack": stack, "pairs": [pair_status(ctx, p) for p in _pairs(ctx, pairs)]}
    click.echo(json.dumps(doc, indent=2) if as_json else format_status(doc))
    if any(p["double_signer_risk"] for p in doc["pairs"]):
        sys.exit(3)


@main.command()
@stack_option
@inventory_option
@click.option("--pair", "-p", required=True)
@click.option("--first-start", is_flag=True, help="First start ever for these keys: no slashing history yet.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--archive", "archive_paths", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A `qpool backup` archive whose history the target must also cover (repeatable).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase of the --archive files (else $QPOOL_KEYS_PASSPHRASE, else a hidden prompt).")
@operator_errors
def activate(stack: str, inventory: Path | None, pair: str, first_start: bool, yes: bool,
             archive_paths: tuple[Path, ...], passphrase_file: Path | None) -> None:
    """Start the validator on the host stack config names active, after verifying every peer is stopped."""
    from qpool.history_coverage import archive_copies
    from qpool.operations import activate as do_activate

    archives = archive_copies(archive_paths, passphrase_file) if archive_paths else []
    do_activate(_context(stack, inventory, yes), pair, first_start=first_start, archives=archives)


@main.command()
@stack_option
@inventory_option
@click.option("--pair", "-p", required=True)
@click.option("--to", "to_role", type=click.Choice(["backup", "primary"]), default="backup", show_default=True,
              help="Role of the host that signs afterwards (`--to primary` is the failback).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--i-accept-slashing-risk", "accept_risk", is_flag=True,
              help="Skip the epoch gate / missing-backup refusals of the fenced path (logged).")
@click.option("--abandon", is_flag=True,
              help="Close an unfinished failover run of this pair that never started its target (no resume).")
@click.option("--json", "as_json", is_flag=True, help="Progress as one JSON object per line (for programs).")
@operator_errors
def failover(stack: str, inventory: Path | None, pair: str, to_role: str, yes: bool, accept_risk: bool,
             abandon: bool, as_json: bool) -> None:
    """Fenced, verified switch of signing to the other host of a pair (resumable; a re-run is a no-op)."""
    from qpool.operations import abandon_failover, alertmanager_alert
    from qpool.operations import failover as do_failover

    ctx = _context(stack, inventory, yes, progress="json" if as_json else "auto")
    if abandon:
        click.echo(abandon_failover(ctx, pair))
        return
    if accept_risk:
        click.echo("WARNING: --i-accept-slashing-risk given: safety refusals of the fenced path are overridden",
                   err=True)
    do_failover(ctx, pair, to_role=to_role, accept_slashing_risk=accept_risk, alert=alertmanager_alert(ctx))


@main.command(name="validator-restart")
@stack_option
@inventory_option
@click.option("--pair", "-p", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@operator_errors
def validator_restart(stack: str, inventory: Path | None, pair: str, yes: bool) -> None:
    """Restart the ACTIVE validator in place (a new validator binary/unit takes effect), under activate's checks."""
    from qpool.validator_restart import restart_validator

    restart_validator(_context(stack, inventory, yes), pair)


@main.command(name="release-oplock")
@stack_option
@inventory_option
@click.option("--host", "host_name", required=True, help="Host whose qpool operation lock to release.")
@click.option("--yes", is_flag=True)
@operator_errors
def release_oplock(stack: str, inventory: Path | None, host_name: str, yes: bool) -> None:
    """Release a qpool operation lock left on a host by a crashed run on another machine."""
    ctx = _context(stack, inventory, yes)
    host = ctx.inventory.hosts.get(host_name)
    if host is None:
        raise QpoolError(f"no host {host_name!r} in the inventory; hosts: {', '.join(ctx.inventory.hosts)}")
    held = ctx.ssh.status(host).get("oplock")
    if not held:
        click.echo(f"{host_name}: no operation lock held")
        return
    if not ctx.confirm(f"Release the lock of run {held.get('run_id')} by {held.get('owner')} on {host_name}? "
                       "Only if that run is dead."):
        raise QpoolError("aborted; nothing changed")
    ctx.ssh.ctl(host, "oplock", "force-release")
    click.echo(f"{host_name}: released the lock of run {held.get('run_id')}")


@click.command("push")
@stack_option
@inventory_option
@click.option("--pair", "-p", "pairs", multiple=True, help="Validator pair (default: every pair).")
@click.option("--key-bundle", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The sealed key bundle (`qpool keys seal` output; one directory per pair with several pairs).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bundle passphrase file (else $QPOOL_KEYS_PASSPHRASE, else a hidden prompt).")
@operator_errors
def keys_push(stack: str, inventory: Path | None, pairs: tuple[str, ...], key_bundle: Path,
              passphrase_file: Path | None) -> None:
    """Import each pair's keys on its LOCKED key hosts over the pinned SSH connection (no keys in the stack)."""
    from qpool.keys.cli import _passphrase
    from qpool.keys.push import push_keys

    passphrase = _passphrase(passphrase_file, confirm=False)
    ctx = _context(stack, inventory)
    push_keys(ctx, key_bundle.read_bytes(), passphrase, _pairs(ctx, pairs))


@main.command("known-hosts")
@stack_option
@operator_errors
def known_hosts(stack: str) -> None:
    """Print the stack's pinned SSH host keys as known_hosts (for QPOOL_KNOWN_HOSTS); reads no secret."""
    from qpool.inventory import known_hosts_from_outputs

    click.echo(known_hosts_from_outputs(stack), nl=False)


def _register_groups() -> None:
    """Subcommand groups that live in their own modules (lab's is added by qpool_cli.main, above both)."""
    from qpool.keys.cli import keys

    keys.add_command(keys_push)  # needs the inventory and SSH, which the keys module does not know
    main.add_command(keys)


_register_groups()


@main.command()
@stack_option
@inventory_option
@click.option("--pair", "-p", "pairs", multiple=True, help="Validator pair (default: every pair, one archive each).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory for the dated archive(s) (created 0700 if missing).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Archive passphrase file (else $QPOOL_KEYS_PASSPHRASE, else a hidden prompt).")
@click.option("--key-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The sealed key bundle (`qpool keys seal` output); default: validatorKeys via the Pulumi CLI.")
@operator_errors
def backup(stack: str, inventory: Path | None, pairs: tuple[str, ...], out_dir: Path, passphrase_file: Path | None,
           key_bundle: Path | None) -> None:
    """Keys + newest slashing history of a pair into one sealed, checksummed archive (stops nothing)."""
    from qpool.backups import backup as do_backup
    from qpool.backups import key_bundle_from_stack
    from qpool.keys.cli import _passphrase

    ctx = _context(stack, inventory)
    bundle = key_bundle.read_bytes() if key_bundle else key_bundle_from_stack(stack)
    source = str(key_bundle) if key_bundle else "stack config validatorKeys"
    passphrase = _passphrase(passphrase_file, confirm=True)
    for pair in _pairs(ctx, pairs):
        click.echo(str(do_backup(ctx, pair, out_dir, passphrase, bundle, key_bundle_source=source)))


@main.command()
@stack_option
@inventory_option
@click.option("--host", "host_name", required=True, help="Key host to restore onto (its validator must be LOCKED).")
@click.option("--archive", "archive_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Archive passphrase file (else $QPOOL_KEYS_PASSPHRASE, else a hidden prompt).")
@click.option("--keys-passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase of the key bundle inside (default: the archive's passphrase).")
@operator_errors
def restore(stack: str, inventory: Path | None, host_name: str, archive_path: Path, passphrase_file: Path | None,
            keys_passphrase_file: Path | None) -> None:
    """Put an archive's keys and slashing history onto a locked host; refuses older history; starts nothing."""
    from qpool.backups import open_archive
    from qpool.backups import restore as do_restore
    from qpool.keys.cli import _passphrase

    passphrase = _passphrase(passphrase_file, confirm=False)
    archive = open_archive(archive_path.read_bytes(), passphrase)
    keys_passphrase = _passphrase(keys_passphrase_file, confirm=False) if keys_passphrase_file else passphrase
    do_restore(_context(stack, inventory), host_name, archive, keys_passphrase)


if __name__ == "__main__":
    main()
