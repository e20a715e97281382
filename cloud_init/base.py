"""The part of every host's configuration that does not depend on its role: first boot and base bundles.

User-data (first boot only, `base_cloud_config`): two identities with key-only SSH — the operators' admin
user (their own keys, full sudo, so an operator can log in even if the bootstrap fails) and the deploy user
(the deploy key; sudo limited to the qp-* tools in its sudoers drop-in) —, qp-apply, no root login, base
packages, the optional data volume, a minimal first-boot firewall (cloud_init.nftables.first_boot_ruleset),
the hardened sshd drop-in, hostname and timezone. Role modules pass their packages, files and commands in;
this module owns the ordering rules that make first boot fail loudly instead of half-way.

Everything a stack-config edit can change is a bundle (cloud_init/bundles.py), re-applied by `pulumi up`:
`firewall` (cloud_init.nftables.firewall_bundle), `ssh-access` (sshd drop-in, both users' whole
authorized_keys — a removed operator key is really removed — and the deploy user's sudoers drop-in) and
`base` (qp-apply, unattended-upgrades, the node exporter's listen address and drop-in). `host_bundles()`
lists them in the order the bootstrap applies them.

Module order that the design relies on (Debian's cloud.cfg): write_files (init stage) -> disk_setup ->
mounts -> users-groups -> ... packages (final stage) -> write_files deferred -> runcmd script (final).
Files owned by service users are therefore deferred, and runcmd runs with packages installed.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from cloud_init import HostFile, HostRenderInputs, host_keys
from cloud_init.bundles import APPLY_TOOL, APPLY_TOOL_SOURCE, Bundle, Check, OnChange
from cloud_init.nftables import NFTABLES_CONF, firewall_bundle, first_boot_ruleset
from cloud_init.render import render
from core import ports

#: Human operators (stack config `operatorSshKeys`, each their own key): full sudo.
ADMIN_USER = "qpadmin"
#: The deploy identity (the stack's deploy key; Pulumi's steps and `qpool`): sudo limited to the root-owned
#: qp-* tools listed in DEPLOY_SUDOERS (docs/operations.md "Who can do what to a signer").
DEPLOY_USER = "qpdeploy"
DEPLOY_SUDOERS = "/etc/sudoers.d/qp-deploy"
#: authorized_keys options of the deploy key: no port/agent/X11 forwarding, no PTY, no ~/.ssh/rc. Neither
#: pulumi-command (session.Run, no PTY) nor qpool (ssh with a command) needs any of them; the operators' -L to
#: the monitoring UIs is theirs.
DEPLOY_KEY_OPTIONS = "restrict"
BASE_PACKAGES: tuple[str, ...] = (
    "nftables", "chrony", "unattended-upgrades", "prometheus-node-exporter", "curl", "jq", "sqlite3",
    "ca-certificates", "python3-venv",
)
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-quantapool.conf"
AUTHORIZED_KEYS = f"/home/{ADMIN_USER}/.ssh/authorized_keys"
DEPLOY_AUTHORIZED_KEYS = f"/home/{DEPLOY_USER}/.ssh/authorized_keys"
UNATTENDED_UPGRADES_CONF = "/etc/apt/apt.conf.d/52quantapool-unattended-upgrades"
AUTO_UPGRADES_CONF = "/etc/apt/apt.conf.d/21quantapool-auto-upgrades"
NODE_EXPORTER_DEFAULT = "/etc/default/prometheus-node-exporter"
NODE_EXPORTER_DROPIN = "/etc/systemd/system/prometheus-node-exporter.service.d/10-quantapool.conf"
DATA_LABEL = "qpdata"  # ext4 labels hold at most 16 bytes
#: Hetzner accepts at most 32 KiB of user-data. Files above this size are stored gzip+base64
#: (`encoding: gz+b64`), which keeps a key host near 20 KiB; reviewers read the plain files that
#: `key_host_files()` returns (e.g. via `qpool render`), not the encoded blob.
COMPRESS_ABOVE_BYTES = 400
USER_DATA_LIMIT_BYTES = 32 * 1024
#: How long the first boot waits for the data volume to be attached (Pulumi attaches it after the server
#: exists, so cloud-init can run before the device appears).
VOLUME_WAIT_SECONDS = 300


@dataclass(frozen=True)
class ServiceUser:
    """A system account for one daemon: no login shell, no home, no password."""

    name: str
    groups: tuple[str, ...] = ()


def _check_mode(f: HostFile) -> None:
    if len(f.mode) != 4 or not set(f.mode) <= set("01234567"):
        raise ValueError(f"{f.path}: mode {f.mode!r} must be four octal digits, e.g. '0644'")
    if not f.path.startswith("/") or ":" not in f.owner:
        raise ValueError(f"{f.path}: path must be absolute and owner user:group (got {f.owner!r})")


def sshd_local_forwards(inputs: HostRenderInputs) -> list[str]:
    """`-L` targets sshd permits: the monitoring host's loopback UIs only; key hosts forward nothing."""
    if inputs.host.is_key_host:
        return []
    return [f"127.0.0.1:{port}" for port in (ports.PROMETHEUS, ports.ALERTMANAGER, ports.GRAFANA)]


def sshd_dropin(inputs: HostRenderInputs) -> str:
    return render("sshd-quantapool.conf.j2", local_forwards=sshd_local_forwards(inputs))


def first_boot_files(inputs: HostRenderInputs) -> list[HostFile]:
    """Files every host's user-data carries (the role's first-boot files come on top): the deploy identity's
    sudoers drop-in and its configuration entry point qp-apply must exist before the first bootstrap step."""
    return [
        HostFile(NFTABLES_CONF, first_boot_ruleset(inputs), "0755"),
        HostFile(SSHD_DROPIN, sshd_dropin(inputs), "0644"),
        HostFile(DEPLOY_SUDOERS, deploy_sudoers(inputs), "0440"),
        HostFile(APPLY_TOOL, APPLY_TOOL_SOURCE.read_text(), "0755"),
    ]


def deploy_sudo_commands(inputs: HostRenderInputs) -> list[str]:
    """The absolute paths of the root-owned qp-* tools the deploy identity runs on this host's role: every
    remote command the program and `qpool` send is `sudo <one of these> ...` (tests/hardening/test_identities.py
    collects them all and checks)."""
    from cloud_init.host_tools import CTL_PATH
    from cloud_init.key_host import CLIENTS_APPLY, IMPORT_KEYS, INSTALL_SECRET, SET_HOST_ENV, START_CLIENTS, WAIT_READY
    from cloud_init.monitoring.layout import START_MONITORING_SCRIPT

    common = [APPLY_TOOL, WAIT_READY, SET_HOST_ENV, INSTALL_SECRET, CTL_PATH]
    role = ([IMPORT_KEYS, START_CLIENTS, CLIENTS_APPLY] if inputs.host.is_key_host else [START_MONITORING_SCRIPT])
    return sorted({*common, *role})


def deploy_sudoers(inputs: HostRenderInputs) -> str:
    """/etc/sudoers.d/qp-deploy: the deploy user may run exactly the role's qp-* tools as root, no password
    (pulumi-command has no PTY), and nothing else; sudo's env_reset strips any QP_* test override."""
    tools = deploy_sudo_commands(inputs)
    return ("# QuantaPool (ssh-access bundle): the deploy identity runs these tools as root, nothing else\n"
            "Cmnd_Alias QP_DEPLOY_TOOLS = " + ", ".join(tools) + "\n"
            f"{DEPLOY_USER} ALL=(root) NOPASSWD: QP_DEPLOY_TOOLS\n")


def authorized_keys(inputs: HostRenderInputs) -> str:
    """The admin user's whole authorized_keys: the operators' own keys (full sudo). Never the deploy key."""
    keys = [k.strip() for k in inputs.config.operator_ssh_keys]
    return ("# Managed by QuantaPool (ssh-access bundle): written whole on every change; edits here are lost.\n"
            + "".join(f"{k}\n" for k in keys))


def deploy_authorized_keys(inputs: HostRenderInputs) -> str:
    """The deploy user's whole authorized_keys: the stack's deploy key only, `restrict`ed."""
    return ("# Managed by QuantaPool (ssh-access bundle): the deploy key only (sudo: the qp-* tools).\n"
            f"{DEPLOY_KEY_OPTIONS} {inputs.deploy_public_key.strip()}\n")


def ssh_access_bundle(inputs: HostRenderInputs) -> Bundle:
    """`ssh-access`: the sshd drop-in (validated with `sshd -t` together with the host's main config, then
    reloaded: the listener and open sessions stay), the operators' and the deploy user's authorized_keys, and
    the deploy user's sudoers drop-in (`visudo -cf` on the staged copy: a broken sudoers file would stop
    sudo for everyone)."""
    staged_dropin = f"$STAGED{SSHD_DROPIN}"
    sshd_check = (
        "install -d -m 0755 /run/sshd && "
        f"printf 'Include %s\\nInclude /etc/ssh/sshd_config\\n' \"{staged_dropin}\" "
        "> \"$STAGED/.qp-bundle/sshd.conf\" && "
        "sshd -t -f \"$STAGED/.qp-bundle/sshd.conf\""
    )
    return Bundle(
        "ssh-access",
        (HostFile(SSHD_DROPIN, sshd_dropin(inputs), "0644"),
         HostFile(AUTHORIZED_KEYS, authorized_keys(inputs), "0600", f"{ADMIN_USER}:{ADMIN_USER}"),
         HostFile(DEPLOY_AUTHORIZED_KEYS, deploy_authorized_keys(inputs), "0600", f"{DEPLOY_USER}:{DEPLOY_USER}"),
         HostFile(DEPLOY_SUDOERS, deploy_sudoers(inputs), "0440")),
        checks=(Check("sshd -t", sshd_check),
                *([Check("authorized_keys parse", f'ssh-keygen -l -f "$STAGED{AUTHORIZED_KEYS}" >/dev/null')]
                  if inputs.config.operator_ssh_keys else []),
                Check("deploy authorized_keys parse",
                      f'ssh-keygen -l -f "$STAGED{DEPLOY_AUTHORIZED_KEYS}" >/dev/null'),
                Check("visudo -c", f'visudo -cqf "$STAGED{DEPLOY_SUDOERS}"')),
        on_change=(OnChange((SSHD_DROPIN,), "systemctl reload ssh.service"),),
    )


def base_bundle(inputs: HostRenderInputs) -> Bundle:
    """`base`: unattended-upgrades policy and the node exporter (private address only); the node exporter
    restarts only when its files change, apt reads its config on every run."""
    private_ip = str(ipaddress.IPv4Address(inputs.host.private_ip))
    files = (
        HostFile(APPLY_TOOL, APPLY_TOOL_SOURCE.read_text(), "0755"),
        HostFile(UNATTENDED_UPGRADES_CONF, render("unattended-upgrades.conf.j2")),
        HostFile(AUTO_UPGRADES_CONF, render("auto-upgrades.conf.j2")),
        HostFile(NODE_EXPORTER_DEFAULT,
                 render("node-exporter.default.j2", listen=f"{private_ip}:{ports.NODE_EXPORTER}",
                        textfile_dir=NODE_EXPORTER_TEXTFILE_DIR)),
        HostFile(NODE_EXPORTER_DROPIN, render("node-exporter.dropin.conf.j2")),
    )
    return Bundle(
        "base",
        files,
        checks=(Check("apt config parses",
                      f'apt-config -c "$STAGED{UNATTENDED_UPGRADES_CONF}" -c "$STAGED{AUTO_UPGRADES_CONF}" '
                      "dump >/dev/null"),),
        on_change=(OnChange((NODE_EXPORTER_DEFAULT, NODE_EXPORTER_DROPIN),
                            "systemctl daemon-reload && systemctl enable prometheus-node-exporter.service && "
                            "systemctl restart prometheus-node-exporter.service"),),
    )


def host_bundles(inputs: HostRenderInputs) -> list[Bundle]:
    """The base bundles of every host, in apply order (the firewall confirm step follows the firewall)."""
    return [firewall_bundle(inputs), ssh_access_bundle(inputs), base_bundle(inputs)]


def base_runcmd(data_dir: str | None, volume: bool) -> list[list[str] | str]:
    cmds: list[list[str] | str] = []
    if data_dir:
        if volume:
            # Never let data (wallet, slashing protection, chain) land on the root disk by accident.
            cmds.append(["mountpoint", "-q", data_dir])
        else:
            cmds.append(["install", "-d", "-m", "0755", "-o", "root", "-g", "root", data_dir])
    cmds += [
        ["nft", "-c", "-f", NFTABLES_CONF],
        ["systemctl", "enable", "nftables.service"],
        ["systemctl", "restart", "nftables.service"],
        # check the config before touching the running daemon (sshd -t needs its privilege-separation dir);
        # reload keeps the listener, so a bad config can never leave the host without SSH
        ["install", "-d", "-m", "0755", "/run/sshd"],
        ["sshd", "-t"],
        ["systemctl", "reload-or-restart", "ssh.service"],
        ["systemctl", "enable", "--now", "chrony.service"],
        ["systemctl", "enable", "--now", "apt-daily.timer", "apt-daily-upgrade.timer"],
        # host-tools writes lock-state metrics here; the node exporter itself is configured by the base bundle
        ["install", "-d", "-m", "0755", "-o", "root", "-g", "root", NODE_EXPORTER_TEXTFILE_DIR],
    ]
    return cmds


def _write_files(files: Sequence[HostFile]) -> list[dict[str, object]]:
    seen: dict[str, HostFile] = {}
    for f in files:
        _check_mode(f)
        if f.path in seen and seen[f.path] != f:
            raise ValueError(f"{f.path} is rendered twice with different content")
        seen[f.path] = f
    out = []
    for f in sorted(seen.values(), key=lambda x: x.path):
        entry: dict[str, object] = {"path": f.path, "content": f.content, "permissions": f.mode,
                                    "owner": f.owner}
        raw = f.content.encode()
        if len(raw) > COMPRESS_ABOVE_BYTES:
            # mtime=0: the same content always gives the same bytes (deterministic user-data)
            entry["content"] = base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode()
            entry["encoding"] = "gz+b64"
        if f.defer or f.owner != "root:root":
            entry["defer"] = True
        out.append(entry)
    return out


def base_cloud_config(
    inputs: HostRenderInputs,
    *,
    packages: list[str],
    files: list[HostFile],
    runcmd: list[list[str] | str],
    service_users: Sequence[ServiceUser] = (),
    groups: Sequence[str] = (),
    data_dir: str | None = None,
) -> dict:
    """The cloud-config mapping for one host.

    User-data carries only the role-independent first-boot ruleset; each role's full ruleset travels in the
    firewall bundle (cloud_init/nftables.py `host_ruleset`), so a trusted-address edit reaches running hosts.
    `data_dir`, when given, is where the host's volume is mounted (formatted only if blank); with
    `inputs.volume_device` None (the lab) it is just created. The runcmd script starts with `set -eu`:
    cloud-init writes runcmd as one shell script and would otherwise carry on after a failed step and
    report success.
    """
    cfg = inputs.config
    host = inputs.host
    admin = {
        "name": ADMIN_USER,
        "gecos": "QuantaPool operator",
        "shell": "/bin/bash",
        "groups": ["adm", "sudo", "systemd-journal"],
        # Operators log in with their own keys; no passwords exist (key-only SSH, locked password).
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": True,
        "ssh_authorized_keys": [k.strip() for k in cfg.operator_ssh_keys],
    }
    # The deploy identity: no group, no cloud-init sudo rule; its sudo is DEPLOY_SUDOERS (qp-* tools only).
    deploy = {
        "name": DEPLOY_USER,
        "gecos": "QuantaPool deploy (Pulumi, qpool)",
        "shell": "/bin/bash",
        "lock_passwd": True,
        "ssh_authorized_keys": [f"{DEPLOY_KEY_OPTIONS} {inputs.deploy_public_key.strip()}"],
    }
    users: list[object] = [admin, deploy]
    for su in service_users:
        entry: dict[str, object] = {"name": su.name, "system": True, "shell": "/usr/sbin/nologin",
                                    "homedir": "/nonexistent", "no_create_home": True, "lock_passwd": True}
        if su.groups:
            entry["groups"] = list(su.groups)
        users.append(entry)

    doc: dict[str, object] = {
        "hostname": host.name,
        "preserve_hostname": False,
        # sudo resolves the host name on every call; without an /etc/hosts entry it warns (and waits on DNS).
        "manage_etc_hosts": True,
        "timezone": "UTC",
        "disable_root": True,
        "ssh_pwauth": False,
        "package_update": True,
        "packages": sorted(set(BASE_PACKAGES) | set(packages)),
        "users": users,
        "write_files": _write_files([*first_boot_files(inputs), *files]),
        "runcmd": ["set -eu", *base_runcmd(data_dir, inputs.volume_device is not None), *runcmd],
    }
    if groups:
        doc["groups"] = sorted(set(groups))
    doc.update(host_keys.cloud_config(inputs.host_key))  # the pinned SSH host key (issue 13)
    if data_dir and inputs.volume_device:
        doc["fs_setup"] = [{
            "label": DATA_LABEL,
            "filesystem": "ext4",
            "device": inputs.volume_device,
            # "any": format only a blank device; an existing ext4 (ours, or Hetzner's pre-formatted volume) is
            # reused and another filesystem is left alone. NEVER "none": cloud-init then runs mkfs -F on the
            # raw disk without looking, wiping the wallet and slashing protection on a re-provisioned host.
            "partition": "any",
            "overwrite": False,
        }]
        doc["mounts"] = [[inputs.volume_device, data_dir, "ext4", "defaults,nofail,discard", "0", "2"]]
        # bootcmd runs before disk_setup and mounts: wait for a volume attached after the server was created.
        # If it never appears, disk_setup fails and cloud-init reports the error (qp-wait-ready shows it).
        dev = shlex.quote(inputs.volume_device)
        doc["bootcmd"] = [f"for i in $(seq 1 {VOLUME_WAIT_SECONDS}); do [ -b {dev} ] && break; sleep 1; done; "
                          "udevadm settle || true"]
    return doc


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a reviewer reads files in user-data as files."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list_representer(dumper: yaml.SafeDumper, value: list) -> yaml.SequenceNode:
    # A command (runcmd entry, mounts row, groups) reads best on one line: ["systemctl", "restart", "x"].
    flow = bool(value) and all(isinstance(v, str) and "\n" not in v for v in value) and len(str(value)) < 120
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str_representer)
_Dumper.add_representer(list, _list_representer)


def to_user_data(doc: dict) -> str:
    """`#cloud-config` + YAML. Deterministic: mapping keys sorted; list order is meaningful and kept
    (write_files are already sorted by path, packages sorted, runcmd in execution order)."""
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1000)
    text = "#cloud-config\n" + body
    if len(text.encode()) > USER_DATA_LIMIT_BYTES:
        raise ValueError(f"user-data is {len(text.encode())} bytes; Hetzner accepts at most {USER_DATA_LIMIT_BYTES}")
    return text


def decoded_write_files(doc: dict) -> dict[str, str]:
    """path -> plain content of a cloud-config's write_files (undoing gz+b64): for tests and review."""
    out = {}
    for entry in doc.get("write_files", []):
        content = entry["content"]
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode()
        out[entry["path"]] = content
    return out
