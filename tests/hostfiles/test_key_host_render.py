"""What a key host's user-data contains: pure-Python checks over every (profile, role, volume) variant."""

from __future__ import annotations

import ipaddress
import re

import pytest
import yaml

from cloud_init import key_host as kh
from cloud_init.base import ADMIN_USER, BASE_PACKAGES, DEPLOY_USER, USER_DATA_LIMIT_BYTES
from cloud_init.client_flags import ACCEPTED, FORBIDDEN_FLAGS
from cloud_init.render import systemd_arg
from core import ports

from .hf_unitparse import exec_argv, long_flags, sections, values
from .support import BOOTNODES, CANARIES, DEPLOY_KEY, GRAFFITI, VOLUME, Rendered, make_config, render_variant

UNITS = (kh.EXECUTION_UNIT, kh.BEACON_UNIT, kh.VALIDATOR_UNIT, kh.LOCK_UNIT)
CLIENT_UNITS = {kh.EXECUTION_UNIT: "execution", kh.BEACON_UNIT: "beacon", kh.VALIDATOR_UNIT: "validator"}


def unit(r: Rendered, name: str) -> str:
    return r.files[f"{kh.UNIT_DIR}/{name}"]


def argv(r: Rendered, name: str) -> list[str]:
    [start] = values(unit(r, name), "Service", "ExecStart")
    return exec_argv(start)


def flags(r: Rendered, name: str) -> dict[str, str | None]:
    return dict(long_flags(argv(r, name)))


# -- document shape ------------------------------------------------------------------------------------

def test_user_data_is_cloud_config_under_hetzner_limit(variant: Rendered) -> None:
    assert variant.user_data.startswith("#cloud-config\n")
    assert len(variant.user_data.encode()) < USER_DATA_LIMIT_BYTES - 4096, "keep 4 KiB headroom"


def test_base_settings(variant: Rendered) -> None:
    d = variant.doc
    assert d["hostname"] == variant.inputs.host.name
    assert d["timezone"] == "UTC"
    assert d["disable_root"] is True and d["ssh_pwauth"] is False and d["package_update"] is True
    assert set(BASE_PACKAGES) <= set(d["packages"])
    admin = next(u for u in d["users"] if u["name"] == ADMIN_USER)
    assert admin["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and admin["shell"] == "/bin/bash"
    assert admin["ssh_authorized_keys"] == [*variant.inputs.config.operator_ssh_keys]  # operators only
    deploy = next(u for u in d["users"] if u["name"] == DEPLOY_USER)  # the deploy key, sudo: qp-* tools only
    assert deploy["ssh_authorized_keys"] == [f"restrict {DEPLOY_KEY}"] and "sudo" not in deploy
    sshd = variant.files["/etc/ssh/sshd_config.d/10-quantapool.conf"]
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no"):
        assert line in sshd.splitlines()
    assert sshd == variant.bundles["/etc/ssh/sshd_config.d/10-quantapool.conf"], "first boot = bundle drop-in"
    uu = variant.bundles["/etc/apt/apt.conf.d/52quantapool-unattended-upgrades"]
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in uu and "#clear Unattended-Upgrade::Origins-Pattern;" in uu
    ne = variant.bundles["/etc/default/prometheus-node-exporter"]
    assert f"--web.listen-address={variant.inputs.host.private_ip}:{ports.NODE_EXPORTER}" in ne
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in ne


def test_runcmd_fails_fast_and_orders_safety_steps(variant: Rendered) -> None:
    cmds = variant.doc["runcmd"]
    assert cmds[0] == "set -eu", "runcmd is one sh script: without set -e a failed step is reported as success"
    flat = [" ".join(c) if isinstance(c, list) else c for c in cmds]
    assert flat.index("nft -c -f /etc/nftables.conf") < flat.index("systemctl restart nftables.service")
    assert flat.index("sshd -t") < flat.index("systemctl reload-or-restart ssh.service")
    lock = flat.index(f"systemctl enable --now {kh.LOCK_UNIT}")
    assert flat[lock + 1] == f"test -e {kh.LOCK_FILE}"
    # first boot only: the client units and the pinned installs come with the `clients` bundle (issue 11)
    assert not [c for c in flat if "qp-install-clients" in c or kh.VALIDATOR_UNIT in c]
    for c in flat:
        assert not re.search(r"systemctl\s+(start|enable|restart|unmask)\b.*qp-validator\.service", c), c
        assert "VALIDATOR_LOCKED" not in c or c.startswith("test -e")


def test_service_users_and_groups(variant: Rendered) -> None:
    users = {u["name"]: u for u in variant.doc["users"] if isinstance(u, dict)}
    assert variant.doc["groups"] == ["qp-jwt"]
    for name in ("qp-execution", "qp-beacon", "qp-validator"):
        u = users[name]
        assert u["system"] is True and u["shell"] == "/usr/sbin/nologin" and u["no_create_home"] is True
        assert "ssh_authorized_keys" not in u and "sudo" not in u
    assert users["qp-execution"]["groups"] == ["qp-jwt"] and users["qp-beacon"]["groups"] == ["qp-jwt"]
    assert "groups" not in users["qp-validator"], "the validator never reads the JWT"


def test_volume_formats_only_blank_device_and_mounts_nofail(variant: Rendered) -> None:
    d = variant.doc
    if not variant.volume:
        assert "fs_setup" not in d and "mounts" not in d and "bootcmd" not in d
        assert ["install", "-d", "-m", "0755", "-o", "root", "-g", "root", kh.DATA_DIR] in d["runcmd"]
        return
    [fs] = d["fs_setup"]
    assert fs["device"] == VOLUME and fs["overwrite"] is False and fs["filesystem"] == "ext4"
    # "none" would make cloud-init run mkfs -F on the raw disk without checking (cc_disk_setup): data loss
    assert fs["partition"] == "any"
    [mount] = d["mounts"]
    assert mount[0] == VOLUME and mount[1] == kh.DATA_DIR and "nofail" in mount[3].split(",")
    assert ["mountpoint", "-q", kh.DATA_DIR] in d["runcmd"]
    [wait] = d["bootcmd"]  # runs before disk_setup: Pulumi attaches the volume after creating the server
    assert f"[ -b {VOLUME} ] && break" in wait


def test_data_dirs_owned_by_their_users(variant: Rendered) -> None:
    cmds = variant.doc["runcmd"]
    for path, owner in ((kh.EXECUTION_DIR, "qp-execution"), (kh.BEACON_DIR, "qp-beacon"),
                        (kh.VALIDATOR_DIR, "qp-validator"), (kh.BACKUP_DIR, "qp-validator")):
        assert ["install", "-d", "-m", "0700", "-o", owner, "-g", owner, path] in cmds


def test_role_file_and_roles_share_everything_else() -> None:
    primary, backup = render_variant("gqrl", "primary", True), render_variant("gqrl", "backup", True)
    assert primary.files[kh.ROLE_FILE] == "primary\n" and backup.files[kh.ROLE_FILE] == "backup\n"
    assert set(primary.files) == set(backup.files)
    # apart from host identity (name, private IP, role) the files are the same
    def neutral(r: Rendered, text: str) -> str:
        h = r.inputs.host
        text = text.replace(h.name, "HOST").replace(h.private_ip, "IP")
        return re.sub(rf"\((role )?{h.role}\)", "(ROLE)", text)
    for path in set(primary.files) - {kh.ROLE_FILE}:
        assert neutral(primary, primary.files[path]) == neutral(backup, backup.files[path]), path
    assert primary.doc["runcmd"] == backup.doc["runcmd"]


# -- units -------------------------------------------------------------------------------------------

def test_every_flag_is_accepted_by_its_client(variant: Rendered) -> None:
    binary = {kh.EXECUTION_UNIT: variant.profile, kh.BEACON_UNIT: "beacon-chain", kh.VALIDATOR_UNIT: "validator"}
    for name, client in binary.items():
        words = argv(variant, name)
        assert words[0] == f"{kh.BIN_DIR}/{client}"
        names = [n for n, _ in long_flags(words)]
        assert names, name
        unknown = set(names) - ACCEPTED[client]
        assert not unknown, f"{name}: flags {sorted(unknown)} are not accepted by {client}"
        assert len(names) == len(set(names)) or name == kh.BEACON_UNIT, f"{name}: duplicated flag"


def test_forbidden_flags_never_appear_anywhere(variant: Rendered) -> None:
    text = variant.user_data + "\n".join(variant.files.values())
    for flag in FORBIDDEN_FLAGS:
        assert not re.search(rf"--{flag}\b", text), flag
    api = flags(variant, kh.EXECUTION_UNIT)["http.api"]
    assert api is not None and "engine" not in api.split(",")


def test_execution_unit(variant: Rendered) -> None:
    f = flags(variant, kh.EXECUTION_UNIT)
    ip = variant.inputs.host.private_ip
    ns = "zond" if variant.profile == "gzond" else "qrl"
    assert f["datadir"] == kh.EXECUTION_DIR and f["testnet"] is None and f["syncmode"] == "snap"
    assert f["http.api"] == f"net,web3,{ns}" and f["http.vhosts"] == f"localhost,{ip}"
    assert f["http.port"] == str(ports.EXECUTION_RPC) and f["authrpc.addr"] == "127.0.0.1"
    assert f["authrpc.port"] == str(ports.EXECUTION_AUTH_RPC) and f["authrpc.jwtsecret"] == kh.JWT_FILE
    assert f["nat"] == "extip:${QP_PUBLIC_IPV4}" and f["metrics"] is None
    assert f["metrics.addr"] == ip and f["metrics.port"] == str(ports.EXECUTION_METRICS)
    u = unit(variant, kh.EXECUTION_UNIT)
    assert values(u, "Service", "User") == ["qp-execution"]
    assert values(u, "Service", "EnvironmentFile") == [kh.HOST_ENV]


def test_execution_network_flag_follows_config() -> None:
    cfg = make_config("gzond")
    for choice, expect in (("betanet", {"betanet"}), ("none", set())):
        c = cfg.model_copy(update={"clients": cfg.clients.model_copy(update={"execution_network_flag": choice})})
        f = flags(render_variant("gzond", "primary", False, cfg=c), kh.EXECUTION_UNIT)
        assert {"testnet", "betanet", "mainnet"} & set(f) == expect


def test_beacon_unit(variant: Rendered) -> None:
    pairs = long_flags(argv(variant, kh.BEACON_UNIT))
    f = dict(pairs)
    ip = variant.inputs.host.private_ip
    assert f["execution-endpoint"] == f"http://127.0.0.1:{ports.EXECUTION_AUTH_RPC}" and f["jwt-secret"] == kh.JWT_FILE
    assert f["p2p-host-ip"] == "${QP_PUBLIC_IPV4}" and f["rpc-host"] == "127.0.0.1"
    assert f["grpc-gateway-host"] == "127.0.0.1" and f["grpc-gateway-port"] == str(ports.BEACON_REST)
    assert f["monitoring-host"] == ip and f["monitoring-port"] == str(ports.BEACON_METRICS)
    assert f["chain-config-file"] == "/etc/quantapool/network/config.yml"
    assert f["genesis-state"] == "/etc/quantapool/network/genesis.ssz"
    assert [v for n, v in pairs if n == "bootstrap-node"] == BOOTNODES[variant.profile]
    assert f["checkpoint-sync-url"] == "https://checkpoint.example/qp%20sync"
    assert f["suggested-fee-recipient"] == variant.inputs.config.pair("p1").fee_recipient
    assert "accept-terms-of-use" in f


def test_optional_beacon_flags_absent_when_unset() -> None:
    cfg = make_config("gqrl", checkpoint=False)
    cfg = cfg.model_copy(update={"clients": cfg.clients.model_copy(update={"network_files": ()})})
    f = flags(render_variant("gqrl", "primary", False, cfg=cfg), kh.BEACON_UNIT)
    for name in ("checkpoint-sync-url", "genesis-beacon-api-url", "chain-config-file", "genesis-state"):
        assert name not in f
    assert "chain-config-file" not in flags(render_variant("gqrl", "primary", False, cfg=cfg), kh.VALIDATOR_UNIT)


def test_validator_unit_flags(variant: Rendered) -> None:
    f = flags(variant, kh.VALIDATOR_UNIT)
    assert f["datadir"] == kh.VALIDATOR_DIR and f["wallet-dir"] == kh.WALLET_DIR
    assert f["wallet-password-file"] == "/etc/quantapool/secrets/wallet-password"
    assert f["beacon-rpc-provider"] == f"127.0.0.1:{ports.BEACON_GRPC}"
    assert f["monitoring-port"] == str(ports.VALIDATOR_METRICS)
    assert f["graffiti"] == GRAFFITI, "graffiti must survive systemd quoting exactly"
    assert "enable-db-backup-webhook" in f and f["db-backup-output-dir"] == kh.BACKUP_DIR
    assert "enable-doppelganger" in f and "accept-terms-of-use" in f


def test_doppelganger_follows_pair() -> None:
    r = render_variant("gqrl", "backup", False, cfg=make_config("gqrl", doppelganger=False))
    assert "enable-doppelganger" not in flags(r, kh.VALIDATOR_UNIT)


def test_validator_lock_gates(variant: Rendered) -> None:
    u = unit(variant, kh.VALIDATOR_UNIT)
    s = sections(u)
    assert "Install" not in s, "the validator unit must not be enable-able"
    assert values(u, "Unit", "AssertPathExists") == [f"!{kh.LOCK_FILE}"]
    # the lock check first; then (only if it passed) the start is recorded, as root, never failing the start
    assert values(u, "Service", "ExecStartPre") == [kh.LOCK_CHECK, f"-+{kh.CLIENTS_STATE} record validator"]
    assert values(u, "Unit", "Requires") == [kh.LOCK_UNIT]
    assert kh.LOCK_UNIT in values(u, "Unit", "After")[0].split() and kh.BEACON_UNIT in values(u, "Unit", "After")[0]
    # Wants=, not Requires=/BindsTo=/PartOf=: a beacon restart by the `clients` bundle must not propagate here
    assert values(u, "Unit", "Wants") == [kh.BEACON_UNIT]
    for key in ("BindsTo", "PartOf", "Requisite"):
        assert not values(u, "Unit", key), key
    assert values(u, "Service", "Restart") == ["on-failure"]
    assert 1 <= int(values(u, "Unit", "StartLimitBurst")[0]) <= 5
    assert values(u, "Service", "User") == ["qp-validator"]


def test_lock_unit_rearms_every_boot(variant: Rendered) -> None:
    u = unit(variant, kh.LOCK_UNIT)
    assert values(u, "Unit", "DefaultDependencies") == ["no"]
    assert "local-fs.target" in values(u, "Unit", "After")[0].split()
    assert kh.VALIDATOR_UNIT in values(u, "Unit", "Before")[0].split()
    assert values(u, "Service", "Type") == ["oneshot"] and values(u, "Service", "RemainAfterExit") == ["yes"]
    assert values(u, "Service", "ExecStart") == [kh.LOCK_ARM]
    assert values(u, "Install", "WantedBy") == ["sysinit.target"]


@pytest.mark.parametrize("name", list(CLIENT_UNITS))
def test_client_units_are_sandboxed(variant: Rendered, name: str) -> None:
    u = unit(variant, name)
    svc = dict(sections(u)["Service"])
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality"):
        assert svc[key] == "yes", key
    assert svc["ProtectSystem"] == "strict" and svc["CapabilityBoundingSet"] == ""
    assert svc["MemoryDenyWriteExecute"] == "no", "Go binaries can SIGSEGV under MDWE (see the unit comment)"
    datadir = dict(long_flags(argv(variant, name)))["datadir"]
    assert svc["ReadWritePaths"] == datadir and values(u, "Unit", "RequiresMountsFor") == [datadir]
    assert int(svc["LimitNOFILE"]) >= 65536


def test_only_client_units_have_install_sections(variant: Rendered) -> None:
    for name in (kh.EXECUTION_UNIT, kh.BEACON_UNIT):
        assert values(unit(variant, name), "Install", "WantedBy") == ["multi-user.target"]


# -- scripts -------------------------------------------------------------------------------------------

def test_scripts_are_strict_bash_and_executable(variant: Rendered) -> None:
    entries = {e["path"]: e for e in variant.doc["write_files"]}
    for path in [*kh.SCRIPTS, kh.INSTALL_SECRET]:
        text = variant.files[path]
        assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text, path
        if path in kh.FIRST_BOOT_SCRIPTS:
            assert entries[path]["permissions"] == "0755" and entries[path]["owner"] == "root:root"
        else:
            assert path not in entries and variant.bundle_modes[path] == "0755", path


def test_user_data_is_first_boot_only(variant: Rendered) -> None:
    """Issue 11: the lock, the role and qp-wait-ready in user-data; everything config can change in the bundle."""
    assert set(variant.user_data_files) >= {kh.ROLE_FILE, f"{kh.UNIT_DIR}/{kh.LOCK_UNIT}", kh.LOCK_ARM,
                                            kh.LOCK_CHECK, kh.WAIT_READY}
    for path in (*(f"{kh.UNIT_DIR}/{u}" for u in kh.CLIENT_UNITS), kh.CLIENTS_JSON, *kh.CLIENT_SCRIPTS,
                 kh.INSTALL_SECRET):
        assert path in variant.bundle_files and path not in variant.user_data_files, path


def test_start_clients_never_touches_the_validator(variant: Rendered) -> None:
    text = variant.files["/usr/local/sbin/qp-start-clients"]
    assert "qp-validator" not in text and "VALIDATOR" not in text
    assert "systemctl enable --now" in text


def test_nothing_unlocks_or_starts_the_validator(variant: Rendered) -> None:
    for path, text in variant.files.items():
        assert not re.search(r"(^|[\s;&|(])rm\s[^\n]*VALIDATOR_LOCKED", text), path
        assert not re.search(r"systemctl\s+(start|enable|restart|unmask)\b[^\n]*(qp-validator\.service|\$unit)",
                             text), path
    writers = [p for p, t in variant.files.items() if re.search(r"mv -f \"\$tmp\" \"\$lock\"", t)]
    assert writers == [kh.LOCK_ARM]


def test_install_secret_table_generated_from_secrets_table(variant: Rendered) -> None:
    from cloud_init.secrets_table import SECRET_FILES, secrets_for_role
    text = variant.files[kh.INSTALL_SECRET]
    accepted = secrets_for_role(variant.role)
    assert set(accepted) == {"jwt", "backup-ship-key"}
    for name, s in SECRET_FILES.items():
        if name in accepted:
            assert f"  {name})\n    target={s.path}; mode={s.mode}; owner={s.user}; group={s.group} ;;" in text
        else:
            assert f"  {name})" not in text


# -- clients manifest ----------------------------------------------------------------------------------

def test_clients_manifest(variant: Rendered) -> None:
    import json
    doc = json.loads(variant.files[kh.CLIENTS_JSON])
    cfg = variant.inputs.config
    assert doc["profile"] == variant.profile
    pins = cfg.clients.pins()
    assert {k: v["binary"] for k, v in doc["clients"].items()} == {
        "execution": variant.profile, "beacon": "beacon-chain", "validator": "validator"}
    for role, entry in doc["clients"].items():
        assert entry["url"] == pins[role].resolved_url() and "{version}" not in entry["url"]
        assert entry["sha256"] == pins[role].sha256 and entry["version"] == pins[role].version
        assert entry["config_key"] == f"clients.{role}.sha256"
    assert [n["name"] for n in doc["network_files"]] == [n.name for n in cfg.clients.network_files]


# -- secrets -------------------------------------------------------------------------------------------

def test_no_secret_material_in_user_data(variant: Rendered) -> None:
    blob = variant.user_data + "\n" + "\n".join(variant.files.values())
    for key, canary in CANARIES.items():
        assert canary not in blob, f"secret config key {key} leaked into user-data"
    assert "PRIVATE KEY" not in blob
    # a JWT is 64 hex characters: the only 64-hex strings allowed are the configured (public) checksums
    cfg = variant.inputs.config
    allowed = {p.sha256 for p in cfg.clients.pins().values()} | {n.sha256 for n in cfg.clients.network_files}
    found = set(re.findall(r"(?<![0-9a-fA-F])(?:0x)?([0-9a-fA-F]{64})(?![0-9a-fA-F])", blob))
    assert found <= allowed, "unexpected 64-hex value in user-data (a JWT?)"
    for entry in variant.doc["write_files"]:
        assert "/secrets/" not in entry["path"], "secret files are installed over SSH, never by cloud-init"


# -- firewall ------------------------------------------------------------------------------------------

def test_nftables_rules(variant: Rendered) -> None:
    nft = variant.bundles["/etc/nftables.conf"]
    cfg = variant.inputs.config
    mon = cfg.monitoring.private_ip
    assert re.search(r"chain input \{\s*type filter hook input priority filter; policy drop;", nft)
    assert f"ip saddr {cfg.network.subnet} tcp dport {ports.SSH} accept" in nft
    assert "elements = { 203.0.113.7/32 }" in nft and "elements = { 2001:db8:42::/48 }" in nft
    assert "ip saddr @ssh_allowed_v4 tcp dport 22 accept" in nft and "ip6 saddr @ssh_allowed_v6 tcp dport 22" in nft
    metrics = sorted([*ports.KEY_HOST_METRICS_PORTS, ports.EXECUTION_RPC])
    assert f"ip saddr {mon} tcp dport {{ {', '.join(map(str, metrics))} }} accept" in nft
    local = ", ".join(str(p) for p in sorted(ports.LOCAL_ONLY_PORTS))
    assert f"tcp dport {{ {local} }} counter drop" in nft
    for p in ports.P2P_PORTS:
        assert re.search(rf"{p.protocol} dport \{{[^}}]*\b{p.port}\b[^}}]*\}} accept", nft), p
    # metrics/RPC ports appear in no other accept rule (e.g. from anywhere)
    for line in nft.splitlines():
        if "accept" in line and any(re.search(rf"\b{m}\b", line) for m in metrics):
            assert f"ip saddr {mon}" in line, line


def test_no_ssh_set_without_trusted_cidrs() -> None:
    r = render_variant("gzond", "primary", False, cfg=make_config("gzond", ssh_cidrs=[]))
    for nft in (r.files["/etc/nftables.conf"], r.bundles["/etc/nftables.conf"]):
        assert "ssh_allowed" not in nft
        ssh_rules = [line.strip() for line in nft.splitlines() if "dport 22 " in line]
        assert ssh_rules == [f"ip saddr {r.inputs.config.network.subnet} tcp dport 22 accept"]
    ipaddress.IPv4Network(r.inputs.config.network.subnet)


# -- quoting -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["plain-value", "with space", "50%", "$HOME", 'q"uote', "back\\slash",
                                   "${QP}", "%n %%", "ünïcode ok"])
def test_systemd_arg_round_trips(value: str) -> None:
    assert exec_argv("/bin/x " + systemd_arg("--graffiti=" + value)) == ["/bin/x", "--graffiti=" + value]


@pytest.mark.parametrize("value", ["new\nline", "tab\there", "bell\x07"])
def test_systemd_arg_refuses_control_characters(value: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        systemd_arg(value)


def test_bad_bootstrap_record_is_refused() -> None:
    cfg = make_config("gqrl")
    bad = cfg.model_copy(update={"clients": cfg.clients.model_copy(
        update={"beacon_bootstrap_nodes": ("qnr:abc --clear-db",)})})
    with pytest.raises(ValueError, match="not an enr:/qnr: record"):
        render_variant("gqrl", "primary", False, cfg=bad)


def test_monitoring_host_is_refused() -> None:
    from cloud_init import HostRenderInputs
    cfg = make_config("gqrl")
    with pytest.raises(ValueError, match="not a validator key host"):
        kh.key_host_files(HostRenderInputs(cfg, cfg.monitoring_host(), DEPLOY_KEY, None))


def test_yaml_round_trip_keeps_files_exact(variant: Rendered) -> None:
    assert yaml.safe_load(variant.user_data) == variant.doc
    assert variant.files[kh.ROLE_FILE] == variant.role + "\n"
