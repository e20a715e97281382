"""Remote bootstrap steps over SSH (pulumi-command), shared by every host role.

What may run here: wait for cloud-init, write non-secret host facts, deliver secrets into root-owned files,
import validator keys while the validator is locked, start the execution client and the beacon node.
What may never run here: starting, enabling or unlocking a validator, or importing slashing protection —
a spurious diff on a Command must not be able to create a second signer (tests/program enforce this).

Every step is idempotent on the host (the scripts it calls are), logs nothing secret, and re-runs only
when its `triggers` change: a replaced server, a rotated secret, a new public IP.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi_command import remote

from cloud_init import HostRenderInputs
from cloud_init.base import ADMIN_USER, base_bundle, ssh_access_bundle
from cloud_init.bundles import INSTALL_COMMAND as BUNDLE_INSTALL_COMMAND
from cloud_init.bundles import Bundle, bundle_digest, bundle_tar_b64, confirm_command
from cloud_init.host_tools import INSTALL_COMMAND, digest, host_tools_files, tools_tar_b64

# Host scripts the steps call: installed by cloud-init, named once in cloud_init/, never edited over SSH.
from cloud_init.key_host import INSTALL_SECRET, SET_HOST_ENV, WAIT_READY
from cloud_init.nftables import firewall_bundle
from core.config import HostSpec, StackConfig

#: Bounded waits: a host that does not answer within these is reported, not retried forever.
DIAL_ERROR_LIMIT = 30
PER_DIAL_TIMEOUT_SECONDS = 20
CLOUD_INIT_TIMEOUT = "30m"
STEP_TIMEOUT = "10m"


def connection(host: pulumi.Input[str], private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    return remote.ConnectionArgs(
        host=host, user=ADMIN_USER, private_key=private_key,
        dial_error_limit=DIAL_ERROR_LIMIT, per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS)


class Steps:
    """Builds one host's Commands in order; each step depends on the previous one."""

    def __init__(self, host_name: str, parent: pulumi.Resource, conn: remote.ConnectionArgs,
                 server_id: pulumi.Input[str]) -> None:
        self.host_name = host_name
        self.parent = parent
        self.conn = conn
        self.server_id = server_id
        self.last: pulumi.Resource | None = None

    def add(self, step: str, create: pulumi.Input[str], *, triggers: Sequence[Any] = (),
            stdin: pulumi.Input[str] | None = None, secret: bool = False, timeout: str = STEP_TIMEOUT,
            depends_on: Sequence[pulumi.Resource] = ()) -> remote.Command:
        deps = [*depends_on, *([self.last] if self.last is not None else [])]
        cmd = remote.Command(
            f"{self.host_name}-{step}",
            connection=self.conn,
            create=create,
            stdin=stdin,
            # A replaced server always re-runs every step; other triggers are per step.
            triggers=[self.server_id, *triggers],
            # stdout/stderr end up in diffs and logs: nothing for steps that carry secrets.
            logging=remote.Logging.NONE if secret else remote.Logging.STDOUT_AND_STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self.parent, depends_on=deps,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
                additional_secret_outputs=["stdout", "stderr"] if secret else None),
        )
        self.last = cmd
        return cmd

    # -- the common steps ----------------------------------------------------------------------------
    def wait_ready(self) -> remote.Command:
        return self.add("wait-ready", f"sudo {WAIT_READY}", timeout=CLOUD_INIT_TIMEOUT)

    def host_env(self, public_ipv4: pulumi.Input[str]) -> remote.Command:
        create = pulumi.Output.from_input(public_ipv4).apply(
            lambda ip: f"sudo {SET_HOST_ENV} {shlex.quote('QP_PUBLIC_IPV4=' + ip)}")
        return self.add("host-env", create, triggers=[public_ipv4])

    def host_key(self) -> remote.Command:
        """Record the SSH host key at first contact; qpool verifies it on every later connection."""
        return self.add("host-key", "cat /etc/ssh/ssh_host_ed25519_key.pub")

    def secret_file(self, name: str, value: pulumi.Input[str]) -> remote.Command:
        """Stream one secret into its root-owned file; its digest (a trigger) re-runs the step on rotation."""
        secret = pulumi.Output.secret(value)
        return self.add(f"secret-{name}", f"sudo {INSTALL_SECRET} {shlex.quote(name)}",
                        stdin=secret, secret=True, triggers=[secret.apply(digest)])

    def host_tools(self, config: StackConfig, host: HostSpec, ship_public_key: pulumi.Input[str]) -> remote.Command:
        """The operations tools bundle (qp-validator-ctl, its config, timers): plain, reviewable stdin."""
        tools = pulumi.Output.from_input(ship_public_key).apply(
            lambda key: tools_tar_b64(host_tools_files(
                HostRenderInputs(config=config, host=host, deploy_public_key="", volume_device=None), key)))
        return self.add("host-tools", INSTALL_COMMAND, stdin=tools, triggers=[tools.apply(digest)])

    # -- configuration bundles (cloud_init/bundles.py) ------------------------------------------------
    def bundle(self, bundle_or_output: Bundle | pulumi.Output[Bundle], *, name: str | None = None,
               timeout: str = STEP_TIMEOUT, depends_on: Sequence[pulumi.Resource] = ()) -> remote.Command:
        """`<host>-bundle-<name>`: stdin is the bundle's base64 tar (plain, reviewable), triggers its digest.

        A Bundle that depends on Outputs (e.g. the deploy key) is passed as Output[Bundle] with `name`
        given, because the step's name must be known before the Output resolves. `depends_on`: steps the
        bundle's checks need besides the previous one (e.g. the secret files its renderer reads).
        """
        if isinstance(bundle_or_output, Bundle):
            name = name or bundle_or_output.name
        if name is None:
            raise ValueError("Steps.bundle: pass name= with an Output[Bundle]")
        tar = pulumi.Output.from_input(bundle_or_output).apply(bundle_tar_b64)
        return self.add(f"bundle-{name}", BUNDLE_INSTALL_COMMAND, stdin=tar, triggers=[tar.apply(digest)],
                        timeout=timeout, depends_on=depends_on)

    def firewall_confirm(self, bundle: Bundle, applied: remote.Command) -> remote.Command:
        """`<host>-firewall-confirm`: a NEW SSH connection after the firewall bundle; if the new ruleset
        dropped the applier this step cannot connect and the host restores the previous ruleset by itself.
        Re-runs exactly when the firewall bundle does (same digest in its triggers)."""
        return self.add("firewall-confirm", confirm_command(bundle.name, bundle_digest(bundle)),
                        triggers=[digest(bundle_tar_b64(bundle))], depends_on=[applied])


def base_bundles(steps: Steps, config: StackConfig, host: HostSpec,
                 deploy_public_key: pulumi.Input[str]) -> list[remote.Command]:
    """Every host's base bundles after host-env: firewall, its confirm, ssh-access, base.

    The confirm is the very next step and its own SSH connection: a ruleset that drops the applier's
    address cannot be confirmed, and the host restores the previous one by itself (FIREWALL_REVERT_SECONDS).
    Nothing else sits between apply and confirm, so an unrelated failing step can never revert a good
    firewall.
    """
    inputs = HostRenderInputs(config=config, host=host, deploy_public_key="", volume_device=None)
    firewall = firewall_bundle(inputs)
    fw_step = steps.bundle(firewall)
    cmds = [fw_step, steps.firewall_confirm(firewall, fw_step)]
    ssh_access = pulumi.Output.from_input(deploy_public_key).apply(
        lambda key: ssh_access_bundle(HostRenderInputs(config=config, host=host, deploy_public_key=key,
                                                       volume_device=None)))
    cmds += [steps.bundle(ssh_access, name="ssh-access"), steps.bundle(base_bundle(inputs))]
    return cmds
