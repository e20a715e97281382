"""The bundle applier against a temporary root: install only what changed, checks before anything,
removed files really removed, on-change actions only for changed paths, firewall apply/confirm/revert."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from pathlib import Path

import pytest

from cloud_init import HostFile
from cloud_init.bundles import (
    APPLY_TOOL,
    APPLY_TOOL_SOURCE,
    INSTALL_COMMAND,
    Bundle,
    Check,
    OnChange,
    bundle_digest,
    bundle_tar,
    bundle_tar_b64,
    is_bundle_member_meta,
)

from .support import FakeHost, fake_host

A, B, C = "/etc/qp-test/a.conf", "/etc/qp-test/b.conf", "/etc/qp-test/c.conf"
FW = "/etc/nftables.conf"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return fake_host(tmp_path)


def _bundle(files: dict[str, str], *, checks: tuple[Check, ...] = (), modes: dict[str, str] | None = None) -> Bundle:
    modes = modes or {}
    return Bundle("demo", tuple(HostFile(p, c, modes.get(p, "0644")) for p, c in files.items()), checks=checks,
                  on_change=(OnChange((A,), "systemctl reload a.service"),
                             OnChange(("/etc/qp-test/b*",), "systemctl restart b.service")))


def test_tar_is_deterministic_and_carries_applier_and_manifest() -> None:
    b = _bundle({A: "one\n", B: "two\n"})
    assert bundle_tar(b) == bundle_tar(_bundle({B: "two\n", A: "one\n"}))
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(bundle_tar(b))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [".qp-bundle/apply.py", ".qp-bundle/manifest.json", "etc/qp-test/a.conf", "etc/qp-test/b.conf"]
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(0, 0, 0, "root")}
    assert [n for n in names if not is_bundle_member_meta(n)] == names[2:]
    assert bundle_digest(b) != bundle_digest(_bundle({A: "one\n", B: "two!\n"}))


def test_first_apply_installs_everything_and_runs_each_action_once(host: FakeHost) -> None:
    res = host.apply(_bundle({A: "one\n", B: "two\n"}, modes={B: "0600"}))
    assert res.returncode == 0, res.stderr
    assert host.file(A).read_text() == "one\n"
    assert stat.S_IMODE(host.file(B).stat().st_mode) == 0o600
    assert host.calls() == ["systemctl reload a.service", "systemctl restart b.service"]
    assert "bundle demo: changed /etc/qp-test/a.conf" in res.stdout
    recorded = json.loads(host.file("/var/lib/quantapool/bundles/demo.json").read_text())
    assert sorted(recorded["files"]) == [A, B]


def test_reapply_unchanged_touches_nothing(host: FakeHost) -> None:
    b = _bundle({A: "one\n", B: "two\n"})
    assert host.apply(b).returncode == 0
    inode = host.file(A).stat().st_ino
    host.log.unlink()
    res = host.apply(b)
    assert res.returncode == 0 and res.stdout.strip() == "bundle demo: no change"
    assert host.calls() == [] and host.file(A).stat().st_ino == inode


def test_only_changed_paths_run_their_actions(host: FakeHost) -> None:
    assert host.apply(_bundle({A: "one\n", B: "two\n"})).returncode == 0
    host.log.unlink()
    res = host.apply(_bundle({A: "one\n", B: "two, edited\n"}))
    assert res.returncode == 0
    assert host.calls() == ["systemctl restart b.service"]
    assert res.stdout.strip() == "bundle demo: changed /etc/qp-test/b.conf"


def test_drift_on_the_host_is_repaired(host: FakeHost) -> None:
    b = _bundle({A: "one\n"})
    assert host.apply(b).returncode == 0
    host.file(A).write_text("edited by hand\n")
    host.file(A).chmod(0o666)
    assert host.apply(b).returncode == 0
    assert host.file(A).read_text() == "one\n" and stat.S_IMODE(host.file(A).stat().st_mode) == 0o644


def test_file_dropped_from_the_bundle_is_removed_and_its_action_runs(host: FakeHost) -> None:
    assert host.apply(_bundle({A: "one\n", B: "two\n", C: "three\n"})).returncode == 0
    host.file("/etc/qp-test/unrelated").write_text("not ours\n")
    host.log.unlink()
    res = host.apply(_bundle({A: "one\n", C: "three\n"}))
    assert res.returncode == 0
    assert not host.file(B).exists() and host.file("/etc/qp-test/unrelated").exists()
    assert host.calls() == ["systemctl restart b.service"]
    assert "bundle demo: removed /etc/qp-test/b.conf" in res.stdout


def test_failed_check_changes_nothing_and_says_which(host: FakeHost) -> None:
    good = _bundle({A: "one\n"}, checks=(Check("a parses", 'grep -q one "$STAGED/etc/qp-test/a.conf"'),))
    assert host.apply(good).returncode == 0
    host.log.unlink()
    bad = _bundle({A: "BROKEN\n", B: "two\n"},
                  checks=(Check("a parses", 'grep -q one "$STAGED/etc/qp-test/a.conf" || '
                                            '{ echo "a.conf: no one" >&2; exit 1; }'),))
    res = host.apply(bad)
    assert res.returncode == 1
    assert res.stderr.strip() == "bundle demo: check 'a parses' failed, nothing changed: a.conf: no one"
    assert host.file(A).read_text() == "one\n" and not host.file(B).exists() and host.calls() == []


def test_failed_action_fails_the_step_loudly(host: FakeHost) -> None:
    res = host.apply(_bundle({A: "one\n"}), QP_FAKE_FAIL="reload a.service")
    assert res.returncode == 1
    assert "bundle demo: files installed but an on-change action failed" in res.stderr


def _qp_apply(host: FakeHost, args: list[str], stdin: str, staging: Path) -> subprocess.CompletedProcess[str]:
    """The step's tool (`sudo qp-apply ...`), run directly: staging parent and install root under tmp_path."""
    return subprocess.run(["python3", str(APPLY_TOOL_SOURCE), *args], input=stdin, text=True, capture_output=True,
                          env=host.env(QP_APPLY_RUN_DIR=str(staging)), timeout=60)


def test_install_command_extracts_privately_and_cleans_up(host: FakeHost, tmp_path: Path) -> None:
    """`sudo qp-apply bundle`: base64 tar on stdin, a private staging dir, always removed."""
    assert f"sudo {APPLY_TOOL} bundle" == INSTALL_COMMAND
    staging = tmp_path / "run"
    staging.mkdir()
    res = _qp_apply(host, ["bundle"], bundle_tar_b64(_bundle({A: "one\n"})), staging)
    assert res.returncode == 0, res.stderr
    assert host.file(A).read_text() == "one\n" and list(staging.iterdir()) == []
    # a failing bundle is cleaned up too, and its failure is the step's
    bad = _bundle({A: "two\n"}, checks=(Check("never", "exit 1"),))
    res = _qp_apply(host, ["bundle"], bundle_tar_b64(bad), staging)
    assert res.returncode == 1 and "check 'never' failed" in res.stderr and list(staging.iterdir()) == []


def _tar_b64(members: dict[str, bytes], *, link: str | None = None) -> str:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("members,link,why", [
    ({"../../etc/passwd": b"x"}, None, "leaving the target"),
    ({"/etc/passwd": b"x"}, None, "absolute"),
    ({}, "usr/local/sbin/qp-validator-ctl", "only regular files"),
])
def test_qp_apply_refuses_hostile_tars(host: FakeHost, tmp_path: Path, members: dict[str, bytes],
                                       link: str | None, why: str) -> None:
    res = _qp_apply(host, ["bundle"], _tar_b64(members, link=link), tmp_path)
    assert res.returncode == 1 and why in res.stderr, res.stderr


def test_qp_apply_deliveries_write_only_their_own_paths(host: FakeHost, tmp_path: Path) -> None:
    """host-tools / exporter: the tar is extracted at the root, but only onto the delivery's own paths, then
    its installer runs (here a stand-in that logs)."""
    ctl = host.file("/usr/local/sbin/qp-validator-ctl")
    res = _qp_apply(host, ["host-tools"], _tar_b64({"etc/sudoers.d/evil": b"ALL\n"}), tmp_path)
    assert res.returncode == 1 and "writes only" in res.stderr and not host.file("/etc/sudoers.d/evil").exists()
    script = b'#!/bin/sh\necho "ctl $*" >> "$QP_FAKE_LOG"\n'
    res = _qp_apply(host, ["host-tools"], _tar_b64({"usr/local/sbin/qp-validator-ctl": script,
                                                    "etc/quantapool/validator-ctl.json": b"{}"}), tmp_path)
    assert res.returncode == 0, res.stderr
    assert ctl.read_bytes() == script and stat.S_IMODE(ctl.stat().st_mode) == 0o755
    assert host.calls() == ["ctl setup"]
    res = _qp_apply(host, ["exporter"], _tar_b64({"usr/local/sbin/qp-validator-ctl": b"x"}), tmp_path)
    assert res.returncode == 1 and "writes only" in res.stderr


@pytest.mark.parametrize("args", [["confirm", "firewall", "abc"], ["confirm", "../x", "0" * 64], ["sh"],
                                  ["bundle", "--extra"], []])
def test_qp_apply_takes_no_free_arguments(host: FakeHost, tmp_path: Path, args: list[str]) -> None:
    assert _qp_apply(host, args, "", tmp_path).returncode == 1


def test_applier_refuses_a_tampered_staging_dir(host: FakeHost, tmp_path: Path) -> None:
    staged = host.stage(_bundle({A: "one\n"}), tmp_path / "x")
    (staged / "etc/qp-test/a.conf").write_text("swapped\n")
    res = subprocess.run(["python3", str(staged / ".qp-bundle/apply.py"), "apply", str(staged)],
                         capture_output=True, text=True, env=host.env(), timeout=60)
    assert res.returncode == 1 and "does not match the manifest" in res.stderr
    assert not host.file(A).exists()


# -- firewall ----------------------------------------------------------------------------------------------
def _fw(text: str) -> Bundle:
    return Bundle("firewall", (HostFile(FW, f"flush ruleset\n{text}\n", "0755"),),
                  checks=(Check("nft -c", 'nft -c -f "$STAGED/etc/nftables.conf"'),), firewall=FW)


def _first_boot(host: FakeHost) -> None:
    host.file(FW).parent.mkdir(parents=True, exist_ok=True)
    host.file(FW).write_text("flush ruleset\nfirst-boot\n")
    host.kernel.write_text("first-boot\n")


def _pending(host: FakeHost) -> Path:
    return host.file("/var/lib/quantapool/bundles/firewall.pending")


def test_firewall_apply_loads_arms_and_confirm_disarms(host: FakeHost) -> None:
    _first_boot(host)
    v1 = _fw("v1")
    res = host.apply(v1)
    assert res.returncode == 0, res.stderr
    assert host.kernel.read_text() == "v1\n" and host.file(FW).read_text().endswith("v1\n")
    runs = [c for c in host.calls() if c.startswith("systemd-run")]
    assert len(runs) == 1 and "--on-active=90s" in runs[0] and f"revert firewall {bundle_digest(v1)}" in runs[0]
    assert (_pending(host) / "digest").read_text().strip() == bundle_digest(v1)
    # only the pending digest can be confirmed
    wrong = host.applier(["confirm", "firewall", bundle_digest(_fw("other"))])
    assert wrong.returncode == 1 and "not" in wrong.stderr and _pending(host).exists()
    ok = host.applier(["confirm", "firewall", bundle_digest(v1)])
    assert ok.returncode == 0, ok.stderr
    assert not _pending(host).exists()
    assert "systemctl stop qp-firewall-revert.timer" in host.calls()
    # a timer that fires anyway (raced the confirm) does nothing
    assert host.applier(["revert", "firewall", bundle_digest(v1)]).returncode == 0
    assert host.kernel.read_text() == "v1\n"
    # re-running the confirm step (same digest, already confirmed) succeeds
    assert host.applier(["confirm", "firewall", bundle_digest(v1)]).returncode == 0


def test_unconfirmed_firewall_reverts_ruleset_file_and_record(host: FakeHost) -> None:
    _first_boot(host)
    v1, v2 = _fw("v1"), _fw("v2")
    assert host.apply(v1).returncode == 0
    assert host.applier(["confirm", "firewall", bundle_digest(v1)]).returncode == 0
    assert host.apply(v2).returncode == 0
    assert host.kernel.read_text() == "v2\n"
    res = host.applier(["revert", "firewall", bundle_digest(v2)])
    assert res.returncode == 0 and "not confirmed in time" in res.stderr
    assert host.kernel.read_text() == "v1\n"
    assert host.file(FW).read_text() == v1.files[0].content
    assert stat.S_IMODE(host.file(FW).stat().st_mode) == 0o755
    recorded = json.loads(host.file("/var/lib/quantapool/bundles/firewall.json").read_text())
    assert recorded["digest"] == bundle_digest(v1)
    # the late confirm of the reverted digest fails loudly: the Pulumi step reports the lockout
    late = host.applier(["confirm", "firewall", bundle_digest(v2)])
    assert late.returncode == 1 and "is not pending" in late.stderr
    # the next apply of v2 (after the operator fixes access) loads it again
    assert host.apply(v2).returncode == 0 and host.kernel.read_text() == "v2\n"


def test_first_apply_reverts_to_the_first_boot_firewall(host: FakeHost) -> None:
    _first_boot(host)
    v1 = _fw("v1")
    assert host.apply(v1).returncode == 0
    assert host.applier(["revert", "firewall", bundle_digest(v1)]).returncode == 0
    assert host.kernel.read_text() == "first-boot\n"
    assert host.file(FW).read_text() == "flush ruleset\nfirst-boot\n"
    assert not host.file("/var/lib/quantapool/bundles/firewall.json").exists()
    # a re-run is a change again (not mistaken for "already installed")
    assert host.apply(v1).returncode == 0 and host.kernel.read_text() == "v1\n"


def test_second_apply_while_pending_reverts_to_the_last_confirmed(host: FakeHost) -> None:
    _first_boot(host)
    v1, v2, v3 = _fw("v1"), _fw("v2"), _fw("v3")
    assert host.apply(v1).returncode == 0
    assert host.applier(["confirm", "firewall", bundle_digest(v1)]).returncode == 0
    assert host.apply(v2).returncode == 0
    assert host.apply(v3).returncode == 0
    # v2's timer was replaced: only v3 can be confirmed or reverted
    assert host.applier(["revert", "firewall", bundle_digest(v2)]).returncode == 0
    assert host.kernel.read_text() == "v3\n"
    assert host.applier(["revert", "firewall", bundle_digest(v3)]).returncode == 0
    assert host.kernel.read_text() == "v1\n"


def test_firewall_check_failure_leaves_running_ruleset(host: FakeHost) -> None:
    _first_boot(host)
    res = host.apply(_fw("BROKEN"))
    assert res.returncode == 1
    assert res.stderr.startswith("bundle firewall: check 'nft -c' failed, nothing changed:")
    assert host.kernel.read_text() == "first-boot\n" and not _pending(host).exists()
    assert not any(c.startswith("systemd-run") for c in host.calls())


def test_firewall_unchanged_rerun_arms_nothing(host: FakeHost) -> None:
    _first_boot(host)
    v1 = _fw("v1")
    assert host.apply(v1).returncode == 0
    assert host.applier(["confirm", "firewall", bundle_digest(v1)]).returncode == 0
    host.log.unlink()
    res = host.apply(v1)
    assert res.returncode == 0 and "no change" in res.stdout
    assert not any(c.startswith(("systemd-run", "nft -f")) for c in host.calls())
    assert host.applier(["confirm", "firewall", bundle_digest(v1)]).returncode == 0


def test_failed_timer_arm_restores_previous(host: FakeHost) -> None:
    _first_boot(host)
    res = host.apply(_fw("v1"), QP_FAKE_FAIL="--on-active")
    assert res.returncode == 1 and "cannot arm the revert timer" in res.stderr
    assert host.kernel.read_text() == "first-boot\n" and not _pending(host).exists()


def test_stdin_is_plain_base64() -> None:
    b64 = bundle_tar_b64(_fw("v1"))
    assert base64.b64decode(b64, validate=True).startswith(b".qp-bundle/apply.py")


def test_unknown_owner_changes_nothing(host: FakeHost) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("owners are only applied when the applier runs as root")
    b = Bundle("demo", (HostFile(A, "one\n"), HostFile(B, "two\n", "0600", "qp-no-such-user:qp-no-such-user")))
    res = host.apply(b)
    assert res.returncode == 1
    assert res.stderr.strip() == ("bundle demo: owner qp-no-such-user:qp-no-such-user of /etc/qp-test/b.conf does "
                                  "not exist on this host, nothing changed")
    assert not host.file(A).exists()
