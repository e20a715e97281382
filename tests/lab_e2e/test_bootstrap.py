"""Bootstrap end to end (issue 5): what `pulumi up` leaves on every host, observed on a lab of the testnet stack.

The lab boots each host with the program's own rendered user-data and runs its recorded bootstrap steps, so
these tests check the real result of cloud-init plus bootstrap: nothing here is a rendering test. The focus
is on the safety model: both key hosts come up with clients running and the validator installed but LOCKED,
and systemd itself refuses to start it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from cloud_init.host_tools import CTL_CONFIG, CTL_PATH
from cloud_init.key_host import JWT_FILE, LOCK_CHECK, LOCK_FILE, WALLET_DIR
from cloud_init.secrets_table import WALLET_PASSWORD_FILE, WALLET_PASSWORD_MODE, WALLET_PASSWORD_OWNER
from core import ports
from lab.deploy import ADMIN_USER, DEPLOY_USER
from lab.standins.wallet import open_wallet, wallet_file
from qpool.keys.seal import unseal_bytes

from .conftest import LAB_MARKS, Lab, key_hosts, one_host, out, sh, wait_for

pytestmark = LAB_MARKS

KEY_HOST_TIMERS = ("qp-validator-state.timer", "qp-slashing-backup.timer")


@pytest.fixture(scope="module")
def lab(shared_lab: Lab) -> Lab:
    return shared_lab  # read-only module: the session's shared lab (conftest.shared_lab)


def _all_hosts(lab: Lab) -> list[str]:
    return list(lab[0].hosts)


# -- cloud-init -------------------------------------------------------------------------------------------

def test_cloud_init_done_without_errors_on_every_host(lab: Lab) -> None:
    """A host whose cloud-init 'finished' with errors would still answer SSH: check the verdict and the log."""
    dep, _ = lab
    for host in _all_hosts(lab):
        long = out(dep, host, "cloud-init status --long")
        assert "status: done" in long, f"{host}: {long}"
        doc = json.loads(out(dep, host, "cloud-init status --format json"))
        assert doc.get("status") == "done" and not doc.get("errors"), f"{host}: {doc}"
        log = out(dep, host, "sudo cat /var/log/cloud-init-output.log")
        assert log.strip(), f"{host}: empty cloud-init-output.log (did the runcmd run?)"
        for marker in ("Traceback", "ERROR"):
            assert marker not in log, f"{host}: {marker!r} in cloud-init-output.log"


# -- clients and the locked validator --------------------------------------------------------------------

def test_execution_and_beacon_active_on_both_key_hosts(lab: Lab) -> None:
    dep, _ = lab
    for host in key_hosts(dep):
        assert out(dep, host, "systemctl is-active qp-execution qp-beacon").split() == ["active", "active"], host


def test_validator_installed_locked_and_systemd_refuses_to_start_it(lab: Lab) -> None:
    """The core safety property, under real systemd: a `systemctl start` on a locked host must fail."""
    dep, _ = lab
    for host in key_hosts(dep):
        assert sh(dep, host, "test -x /opt/quantapool/bin/validator").returncode == 0, f"{host}: not installed"
        assert sh(dep, host, f"test -e {LOCK_FILE}").returncode == 0, f"{host}: lock file missing"
        # installed, never enabled: no [Install] section, so 'static'
        assert out(dep, host, "systemctl is-enabled qp-validator || true").strip() == "static", host
        assert out(dep, host, "systemctl is-active qp-validator || true").strip() == "inactive", host

        started = sh(dep, host, "sudo systemctl start qp-validator")
        assert started.returncode != 0, f"{host}: systemctl start qp-validator succeeded on a LOCKED host"
        assert out(dep, host, "systemctl is-active qp-validator || true").strip() in ("inactive", "failed"), host
        assert sh(dep, host, "pgrep -u qp-validator").returncode == 1, f"{host}: a qp-validator process runs"
        assert sh(dep, host, f"test -e {LOCK_FILE}").returncode == 0, f"{host}: the start attempt removed the lock"
        journal = out(dep, host, "sudo journalctl -u qp-validator --no-pager -o cat")
        assert "Assertion failed" in journal, f"{host}: systemd's AssertPathExists gate did not fire:\n{journal}"
        # The second, independent gate (ExecStartPre) refuses too.
        gate = sh(dep, host, f"sudo {LOCK_CHECK}")
        assert gate.returncode != 0, f"{host}: {LOCK_CHECK} allowed a start while locked"

        st = json.loads(out(dep, host, f"sudo {CTL_PATH} status"))
        assert st["locked"] is True and st["processes"] == [] and st["metrics_port_open"] is False, st


# -- JWT: one per host, shared by its two clients ---------------------------------------------------------

def _jwt(secret: bytes) -> str:
    """HS256 engine-API token with an `iat` claim, as a consensus client sends it."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps({"iat": int(time.time())}).encode()))
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def _engine_call(dep, host: str, token: str | None) -> str:  # type: ignore[no-untyped-def]
    method = f"{dep.config.clients.rpc_namespace}_syncing"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []})
    auth = f"-H {shlex.quote('Authorization: Bearer ' + token)} " if token else ""
    return out(dep, host, f"curl -s -o /dev/null -w '%{{http_code}}' -X POST -H 'Content-Type: application/json' "
                          f"{auth}--data {shlex.quote(body)} http://127.0.0.1:{ports.EXECUTION_AUTH_RPC}/").strip()


def test_each_key_host_has_its_own_jwt_and_both_clients_agree_on_it(lab: Lab) -> None:
    """Beacon synced with the execution client proves they share the secret (a mismatch leaves it syncing);
    the engine port's 401 without a token, 200 with the host's own secret and 401 with the peer's secret
    prove the port is authenticated and that every host has its own JWT."""
    dep, _ = lab
    hosts = key_hosts(dep)
    secrets = {}
    for host in hosts:
        assert out(dep, host, f"sudo stat -c '%a %U:%G' {JWT_FILE}").split() == ["640", "root:qp-jwt"], host
        secrets[host] = bytes.fromhex(out(dep, host, f"sudo cat {JWT_FILE}").strip().removeprefix("0x"))
        assert len(secrets[host]) == 32, host
    assert len(set(secrets.values())) == len(hosts), "key hosts share a JWT secret"

    prefix = f"http://127.0.0.1:{ports.BEACON_REST}/qrl/v1/node"
    for host in hosts:
        health = wait_for(f"{host}: beacon health 200", lambda h=host: out(
            dep, h, f"curl -s -o /dev/null -w '%{{http_code}}' {prefix}/health").strip() == "200")
        assert health
        syncing = json.loads(out(dep, host, f"curl -sf {prefix}/syncing"))["data"]
        assert syncing["is_syncing"] is False and syncing["el_offline"] is False, f"{host}: {syncing}"

        assert _engine_call(dep, host, None) == "401", f"{host}: engine API answered without a JWT"
        assert _engine_call(dep, host, _jwt(secrets[host])) == "200", f"{host}: own JWT rejected"
        other = next(h for h in hosts if h != host)
        assert _engine_call(dep, host, _jwt(secrets[other])) == "401", f"{host}: accepted {other}'s JWT"


# -- keys -------------------------------------------------------------------------------------------------

def test_keys_imported_into_the_wallet(lab: Lab, tmp_path: Path) -> None:
    """The wallet on each key host opens with its password file and holds exactly the sealed keystores' keys,
    which only `validator accounts import` (run by the import-keys bootstrap step) puts there."""
    dep, _ = lab
    sealed = unseal_bytes(base64.b64decode(dep.secrets["validatorKeys"]), dep.secrets["validatorKeysPassphrase"])
    expected = {"0x" + json.loads(data)["pubkey"].removeprefix("0x").lower()
                for name, (_mode, data) in sealed.items() if name.startswith("keystore-")}
    assert expected, "the lab sealed no keystores"
    owner_user, owner_group = WALLET_PASSWORD_OWNER.split(":")
    for host in key_hosts(dep):
        assert out(dep, host, f"sudo stat -c '%a %U:%G' {WALLET_PASSWORD_FILE}").split() == [
            WALLET_PASSWORD_MODE.lstrip("0"), f"{owner_user}:{owner_group}"], host
        local = tmp_path / host
        target = wallet_file(local)
        target.parent.mkdir(parents=True)
        target.write_bytes(dep.hosts[host].exec(["cat", str(wallet_file(Path(WALLET_DIR)))], check=True).stdout)
        password = dep.hosts[host].exec(["cat", WALLET_PASSWORD_FILE], check=True).stdout.decode().strip()
        accounts = open_wallet(local, password)
        assert {a.pubkey.lower() for a in accounts} == expected, host


# -- node exporter, chrony, sshd ----------------------------------------------------------------------------

def test_node_exporter_serves_node_and_lock_metrics_on_private_ip(lab: Lab) -> None:
    """Scraped from the monitoring host (the only allowed source), on each host's private address."""
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    for spec in dep.config.hosts():
        url = f"http://{spec.private_ip}:{ports.NODE_EXPORTER}/metrics"
        if spec.is_key_host:
            metrics = wait_for(f"{spec.name}: quantapool_validator_locked in node exporter", lambda u=url: (
                (text := out(dep, mon, f"curl -sf {u}")) and "\nquantapool_validator_locked " in text and text))
            assert "\nquantapool_validator_locked 1" in metrics, spec.name
            assert "\nquantapool_validator_unit_active 0" in metrics, spec.name
        else:
            metrics = out(dep, mon, f"curl -sf {url}")
        assert "\nnode_uname_info{" in metrics and "\nnode_cpu_seconds_total{" in metrics, spec.name
        # bound to the private address, not to every address
        assert sh(dep, spec.name, f"curl -sf -o /dev/null http://127.0.0.1:{ports.NODE_EXPORTER}/metrics"
                  ).returncode != 0, f"{spec.name}: node exporter listens on loopback too"


def test_chrony_enabled_and_running_where_the_container_allows(lab: Lab) -> None:
    """chrony is enabled everywhere. Lab difference: nspawn hosts share the machine's kernel clock and lack
    CAP_SYS_TIME, so Debian's unit skips itself by its ConditionCapability; anything else must be active."""
    dep, _ = lab
    for host in _all_hosts(lab):
        assert out(dep, host, "systemctl is-enabled chrony").strip() == "enabled", host
        props = dict(line.split("=", 1) for line in out(
            dep, host, "systemctl show chrony -p ActiveState -p ConditionResult").splitlines() if "=" in line)
        if props["ActiveState"] == "active":
            continue
        journal = out(dep, host, "sudo journalctl -u chrony --no-pager -o cat")
        assert props["ConditionResult"] == "no" and "ConditionCapability=CAP_SYS_TIME" in journal, (
            f"{host}: chrony {props} for a reason other than the lab's missing CAP_SYS_TIME:\n{journal}")


def test_sshd_refuses_passwords_and_root(lab: Lab) -> None:
    dep, _ = lab
    for host in _all_hosts(lab):
        lab_host = dep.hosts[host]
        base = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={dep.network.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null"]
        password = subprocess.run(
            [*base, "-v", "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
             "-l", ADMIN_USER, lab_host.ip, "true"], capture_output=True, timeout=30)
        assert password.returncode == 255, host
        offered = [ln for ln in password.stderr.decode(errors="replace").splitlines()
                   if "Authentications that can continue:" in ln]
        assert offered and all(ln.rstrip().endswith(": publickey") for ln in offered), (host, offered)

        key = ["-i", str(dep.deploy_key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        root = subprocess.run([*base, *key, "-l", "root", lab_host.ip, "true"], capture_output=True, timeout=30)
        assert root.returncode == 255 and b"Permission denied" in root.stderr, (host, root.stderr[-300:])
        # two identities: the deploy key is not an operator login (the admin user has full sudo)
        admin = subprocess.run([*base, *key, "-l", ADMIN_USER, lab_host.ip, "true"], capture_output=True,
                               timeout=30)
        assert admin.returncode == 255 and b"Permission denied" in admin.stderr, (host, admin.stderr[-300:])
        deploy = subprocess.run([*base, *key, "-l", DEPLOY_USER, lab_host.ip, "true"], capture_output=True,
                                timeout=30)
        assert deploy.returncode == 0, f"{host}: control failed, the deploy key itself does not work"

        effective = out(dep, host, "sudo sshd -T")
        for setting in ("passwordauthentication no", "permitrootlogin no", "kbdinteractiveauthentication no"):
            assert f"\n{setting}\n" in f"\n{effective}", f"{host}: sshd -T lacks {setting!r}"


def test_deploy_identity_runs_only_the_qp_tools_as_root(lab: Lab) -> None:
    """Issue 13: over SSH as the deploy user (the key Pulumi and qpool use), sudo refuses anything but the
    qp-* tools its sudoers drop-in lists; the operator (admin user, own key) has full sudo."""
    dep, _ = lab
    for host in _all_hosts(lab):
        spec = dep.spec(host)
        allowed = (f"sudo -n {CTL_PATH} status" if spec.is_key_host
                   else f"sudo -n {CTL_PATH} list-replicas --owner {host}")
        works = dep.deploy_ssh(host, allowed, timeout=60)
        assert works.returncode == 0, f"{host}: {allowed}: {works.stderr.decode(errors='replace')[-300:]}"
        json.loads(works.stdout)
        for refused in ("sudo -n /bin/true", "sudo -n cat /etc/shadow", "sudo -n sh -c id",
                        "sudo -n -u qp-validator /bin/true", f"sudo -n {CTL_PATH}/../../../bin/true",
                        "sudo -n python3 -c 1", "sudo -n systemctl start qp-validator.service"):
            proc = dep.deploy_ssh(host, refused, timeout=60)
            assert proc.returncode == 1 and proc.stdout == b"" and b"sudo:" in proc.stderr, (
                host, refused, proc.returncode, proc.stderr[-300:])
        # what the deploy user may run, as sudo itself reports it: exactly the listed qp-* tools
        listed = dep.deploy_ssh(host, "sudo -n -l", timeout=60).stdout.decode()
        assert "NOPASSWD:" in listed and "(ALL" not in listed and "ALL)" not in listed, listed
        assert "/usr/local/sbin/qp-" in listed and "/bin/" not in listed.split("NOPASSWD:")[-1], listed
        assert dep.deploy_ssh(host, "id -nG", timeout=30).stdout.split() == [DEPLOY_USER.encode()]
        # the deploy key is `restrict`ed: no forwarding (not even to the monitoring UIs operators may reach)
        argv = dep.hosts[host].ssh_argv(DEPLOY_USER, dep.deploy_key)
        argv[-1:-1] = ["-W", f"127.0.0.1:{ports.PROMETHEUS if not spec.is_key_host else ports.BEACON_REST}"]
        forward = subprocess.run(argv, input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=60)
        assert forward.returncode == 255 and not forward.stdout, (host, forward.stderr[-300:])
        # the operator: full sudo
        assert "\nroot:" in "\n" + out(dep, host, "sudo -n cat /etc/shadow"), host
        assert out(dep, host, "sudo -n /bin/true") == ""


# -- monitoring -------------------------------------------------------------------------------------------

def _targets(dep, mon: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(out(dep, mon, f"curl -sf localhost:{ports.PROMETHEUS}/api/v1/targets"))["data"][
        "activeTargets"]


def test_prometheus_scrapes_every_target_up(lab: Lab) -> None:
    """Every target is up, except by design the validator targets of locked hosts (nothing listens on 8081
    while the validator is stopped)."""
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    targets = wait_for("every Prometheus target scraped at least once", lambda: (
        (t := _targets(dep, mon)) and all(x["health"] != "unknown" for x in t) and t), timeout=90)
    by_job: dict[str, dict[str, str]] = {}
    for t in targets:
        by_job.setdefault(t["labels"]["job"], {})[t["scrapeUrl"]] = t["health"]

    key_ips = [dep.spec(h).private_ip for h in key_hosts(dep)]
    all_ips = [spec.private_ip for spec in dep.config.hosts()]
    assert sorted(u.split("//")[1].split(":")[0] for u in by_job.get("node", {})) == sorted(all_ips), by_job
    for job in ("execution", "beacon", "validator"):
        assert sorted(u.split("//")[1].split(":")[0] for u in by_job.get(job, {})) == sorted(key_ips), (job, by_job)
    for job, urls in by_job.items():
        if job == "validator":
            continue
        down = {u: h for u, h in urls.items() if h != "up"}
        assert not down, f"job {job}: targets not up: {down}"
    assert set(by_job["validator"].values()) == {"down"}, "a validator target is up while both hosts are locked"


def test_contract_exporter_runs_from_the_lab_mirror(lab: Lab) -> None:
    """Lab difference (lab/overlay.py, item 5): pip installs the exporter's hash-locked wheels from the lab
    mirror, so the exporter runs as in production and its target is up."""
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    assert "find-links = http://" in out(dep, mon, "cat /etc/pip.conf")
    assert out(dep, mon, "systemctl is-active qp-contract-exporter.service").strip() == "active"
    jobs = wait_for("contract exporter target up", lambda: [
        t for t in _targets(dep, mon) if t["labels"]["job"] == "contract_exporter" and t["health"] == "up"],
        timeout=90)
    assert len(jobs) == 1, jobs


def test_alertmanager_ready(lab: Lab) -> None:
    dep, _ = lab
    mon = one_host(dep, "monitoring")
    assert out(dep, mon, f"curl -s -o /dev/null -w '%{{http_code}}' localhost:{ports.ALERTMANAGER}/-/ready"
               ).strip() == "200"
    assert out(dep, mon, "systemctl is-active prometheus prometheus-alertmanager").split() == ["active", "active"]


# -- host tools -----------------------------------------------------------------------------------------------

def test_host_tools_installed_and_timers_enabled(lab: Lab) -> None:
    """The host-tools bootstrap step installs qp-validator-ctl everywhere and enables the key hosts' timers."""
    dep, _ = lab
    for host in _all_hosts(lab):
        assert sh(dep, host, f"test -x {CTL_PATH} && test -s {CTL_CONFIG}").returncode == 0, host
        timers = json.loads(out(dep, host, f"cat {CTL_CONFIG}"))["timers"]
        if dep.spec(host).is_key_host:
            assert sorted(timers) == sorted(KEY_HOST_TIMERS), host
        else:
            assert timers == [], host
        for timer in timers:
            assert out(dep, host, f"systemctl is-enabled {timer}").strip() == "enabled", (host, timer)
            assert out(dep, host, f"systemctl is-active {timer}").strip() == "active", (host, timer)
