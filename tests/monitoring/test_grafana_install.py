"""Grafana's installation without `gpg` at apt-configure time.

The repository's signing key ships as an ASCII-armoured file that apt reads directly (signed-by=...asc), the
runcmd step `qp-install-grafana` adds the source and installs the pinned version after Debian's packages,
and the lab marker skips it. Checked with the real gpg (fingerprint, self-signatures), cloud-init's schema,
shellcheck, and the script run against stub apt tools.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cloud_init import HostRenderInputs, monitoring
from cloud_init.base import decoded_write_files
from cloud_init.render import render

from .support import tool, variant

DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyForTestsOnly0000000000000000000 pulumi-deploy"


def _user_data() -> tuple[str, dict]:
    cfg = variant()
    text = monitoring.render_monitoring_user_data(HostRenderInputs(
        config=cfg, host=cfg.monitoring_host(), deploy_public_key=DEPLOY_KEY,
        volume_device="/dev/disk/by-id/scsi-0HC_Volume_4242"))
    return text, yaml.safe_load(text)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, **kw)  # type: ignore[call-overload]


@pytest.mark.realtools
def test_shipped_key_is_grafanas_with_valid_self_signatures(tmp_path: Path) -> None:
    gpg = tool("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    key = monitoring.GRAFANA_APT_KEY_SRC
    shown = run([gpg, "--batch", "--show-keys", "--with-colons", str(key)], env=env)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split(":") for line in shown.stdout.splitlines()]
    pubs = [i for i, r in enumerate(rows) if r[0] == "pub"]
    assert len(pubs) == 1, "exactly one primary key: apt trusts every key in a signed-by file"
    assert rows[pubs[0] + 1][0] == "fpr" and rows[pubs[0] + 1][9] == monitoring.GRAFANA_APT_KEY_FINGERPRINT
    assert "s" in rows[pubs[0]][11].lower(), "the primary key must be able to sign (apt checks Release with it)"
    assert run([gpg, "--batch", "--import", str(key)], env=env).returncode == 0
    sigs = run([gpg, "--batch", "--with-colons", "--check-sigs", monitoring.GRAFANA_APT_KEY_FINGERPRINT], env=env)
    self_sigs = [r.split(":") for r in sigs.stdout.splitlines() if r.startswith("sig:")]
    assert self_sigs and all(s[1] == "!" for s in self_sigs), sigs.stdout  # "!" = verified good


def test_user_data_installs_grafana_without_cloud_inits_apt_keys() -> None:
    text, doc = _user_data()
    assert "apt" not in doc, "apt.sources keyid/key need gpg at apt-configure time"
    assert "keyserver" not in text
    files = decoded_write_files(doc)
    assert files[monitoring.GRAFANA_APT_KEY] == monitoring.GRAFANA_APT_KEY_SRC.read_text()
    assert monitoring.GRAFANA_APT_KEY.endswith(".asc")  # apt reads armoured keys only with this suffix
    script = files[monitoring.GRAFANA_INSTALL_SCRIPT]
    assert f"signed-by={monitoring.GRAFANA_APT_KEY}" in script
    runcmd = doc["runcmd"]
    step = [monitoring.GRAFANA_INSTALL_SCRIPT, variant().monitoring.grafana_version]
    assert step in runcmd
    # runcmd runs after the packages module; the configuration comes later over SSH (monitoring-config bundle),
    # so installing Grafana is the last first-boot step
    assert runcmd[-1] == step


@pytest.mark.realtools
def test_monitoring_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(_user_data()[0])
    res = run([tool("cloud-init"), "schema", "--config-file", str(path)])
    assert res.returncode == 0 and "Valid cloud-config" in res.stdout, res.stdout + res.stderr


@pytest.mark.realtools
def test_install_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "qp-install-grafana"
    path.write_text(monitoring.grafana_install_script())
    res = run([tool("shellcheck"), "--shell=bash", "--severity=style", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr


class Rig:
    """The script rendered onto scratch paths, with apt-get/dpkg-query stubs that log their arguments."""

    def __init__(self, tmp: Path, installed: str = "") -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.key = tmp / "keyrings/grafana.asc"
        self.key.parent.mkdir()
        self.key.write_text(monitoring.GRAFANA_APT_KEY_SRC.read_text())
        self.list = tmp / "grafana.list"
        self.marker = tmp / "lab-no-grafana"
        self.log = tmp / "log"
        self.log.write_text("")
        source = f"deb [signed-by={self.key}] https://apt.grafana.com stable main"
        text = render(
            "qp-install-grafana.sh.j2",
            key_path=str(self.key), fingerprint=monitoring.GRAFANA_APT_KEY_FINGERPRINT, list_path=str(self.list),
            source=source, lab_marker=str(self.marker))
        self.script = tmp / "qp-install-grafana"
        self.script.write_text(text)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, body in (("apt-get", "exit 0"),
                           ("dpkg-query", f'[ -n "{installed}" ] && printf "install ok installed {installed}" '
                                          "&& exit 0; exit 1")):
            (self.bin / name).write_text(f'#!/bin/bash\necho "{name} $*" >>"{self.log}"\n{body}\n')
            (self.bin / name).chmod(0o755)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["/bin/bash", str(self.script), *args], env={"PATH": f"{self.bin}:/usr/bin:/bin"})

    def apt_calls(self) -> list[str]:
        return [c for c in self.log.read_text().splitlines() if c.startswith("apt-get")]


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the script refuses to run as non-root")


def test_script_adds_the_source_and_installs_the_pinned_version(tmp_path: Path, need_root: None) -> None:
    rig = Rig(tmp_path)
    res = rig.run("11.6.1")
    assert res.returncode == 0, res.stderr
    assert rig.list.read_text() == f"deb [signed-by={rig.key}] https://apt.grafana.com stable main\n"
    update, install = rig.apt_calls()
    assert update.startswith("apt-get update --error-on=any") and f"sourcelist={rig.list}" in update
    assert install.endswith("--force-confold grafana=11.6.1") and "--force-confdef" in install


def test_script_is_idempotent_and_skipped_in_the_lab(tmp_path: Path, need_root: None) -> None:
    done = Rig(tmp_path / "installed", installed="11.6.1")
    assert done.run("11.6.1").returncode == 0 and done.apt_calls() == []
    upgrade = Rig(tmp_path / "older", installed="11.5.0")  # a changed grafanaVersion installs the new one
    assert upgrade.run("11.6.1").returncode == 0 and len(upgrade.apt_calls()) == 2
    lab = Rig(tmp_path / "lab")
    lab.marker.write_text("lab\n")
    res = lab.run("11.6.1")
    assert res.returncode == 0 and "Grafana not installed" in res.stdout and lab.apt_calls() == []


def test_script_fails_without_its_key(tmp_path: Path, need_root: None) -> None:
    rig = Rig(tmp_path)
    rig.key.unlink()
    res = rig.run("11.6.1")
    assert res.returncode != 0 and "missing" in res.stderr and rig.apt_calls() == []
