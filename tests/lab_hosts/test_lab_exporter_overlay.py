"""The lab's contract-exporter difference: wheels cache, mirror publication, pip config, stand-in pool env."""

from __future__ import annotations

import configparser
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_init.exporter_deploy import LOCK_SRC
from lab import overlay, wheels
from lab.deploy import release_mirror
from lab.standins import pool
from qpool.stacks import load_stack


def test_cache_dir_is_keyed_by_the_lock(tmp_path: Path) -> None:
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    a.write_text("x==1 --hash=sha256:" + "0" * 64 + "\n")
    b.write_text("x==2 --hash=sha256:" + "0" * 64 + "\n")
    assert wheels.cache_dir(a, tmp_path) == wheels.cache_dir(a, tmp_path)
    assert wheels.cache_dir(a, tmp_path) != wheels.cache_dir(b, tmp_path)


def test_download_is_hash_locked_binary_only_for_the_lab_python(tmp_path: Path) -> None:
    cmd = wheels.download_command(LOCK_SRC, tmp_path)
    joined = " ".join(cmd)
    for part in ("download", "--require-hashes", "--only-binary=:all:", "--no-deps", f"-r {LOCK_SRC}",
                 "--python-version 3.11", "--abi cp311", "--platform manylinux2014_x86_64"):
        assert part in joined, part


def test_a_complete_cache_is_reused_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = wheels.cache_dir(LOCK_SRC, tmp_path)
    final.mkdir(parents=True)
    (final / wheels.COMPLETE).write_text("ok\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("downloaded again"))
    assert wheels.exporter_wheels(LOCK_SRC, tmp_path) == final


def test_a_failed_download_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "no route"))
    with pytest.raises(wheels.WheelsError, match="no route"):
        wheels.exporter_wheels(LOCK_SRC, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pip_conf_uses_only_the_mirror() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(overlay.pip_conf("http://10.42.27.254:8088").decode())
    assert dict(parser["global"]) == {"no-index": "true", "find-links": "http://10.42.27.254:8088/wheels/",
                                      "trusted-host": "10.42.27.254"}
    files = overlay.monitoring_extra_files("http://10.42.27.254:8088")
    assert overlay.PIP_CONF in files and overlay.NO_GRAFANA_MARKER in files


def test_standin_pool_env_carries_the_stacks_addresses() -> None:
    cfg = load_stack("testnet").config
    assert cfg.pool_contracts is not None
    env = overlay.standin_dropins("gqrl", 12.0, 8, 1_700_000_000, overlay.pool_contracts_env(cfg))
    line = next(x for x in env[overlay.STANDIN_ENV_FILE].decode().splitlines() if x.startswith(pool.ENV + "="))
    parsed = pool.PoolContracts.parse(line.split("=", 1)[1])
    assert parsed.deposit_pool.hex() == cfg.pool_contracts.deposit_pool[1:].lower()
    assert parsed.stqrl.hex() == cfg.pool_contracts.stqrl[1:].lower()
    assert parsed.validator_manager.hex() == cfg.pool_contracts.validator_manager[1:].lower()


def test_the_mirror_listing_is_a_find_links_page_for_the_lock(tmp_path: Path) -> None:
    """pip resolves every locked wheel, hash-checked, from the mirror's directory listing (cached wheels)."""
    cached = wheels.cache_dir()
    if not (cached / wheels.COMPLETE).exists():
        pytest.skip(f"WHEELS NOT CACHED: {cached} is filled by the first `qpool lab up`; this check did not run")
    mirror = tmp_path / "mirror"
    wheels.publish(cached, mirror)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with release_mirror(mirror, "127.0.0.1", port=port) as url:
        cmd = [*wheels.download_command(LOCK_SRC, tmp_path / "out"), "--no-index", "--find-links",
               f"{url}/wheels/", "--isolated"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.whl")) == sorted(p.name for p in cached.glob("*.whl"))
    assert sys.executable in cmd


@pytest.mark.slow  # a real venv + pip install of every locked wheel: about a minute of CPU; `make test` runs it
def test_the_installers_pip_step_works_with_the_lab_pip_conf(tmp_path: Path) -> None:
    """What qp-install-exporter does on the lab's monitoring host, with the overlay's pip.conf: a fresh venv,
    `pip install --require-hashes --only-binary=:all: -r requirements.lock` from the mirror, then the exporter
    imports (needs the cached wheels and a CPython 3.11 like the lab's Debian 12)."""
    cached = wheels.cache_dir()
    if not (cached / wheels.COMPLETE).exists():
        pytest.skip(f"WHEELS NOT CACHED: {cached} is filled by the first `qpool lab up`; this check did not run")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the locked wheels are for CPython 3.11 (the lab's Debian 12)")
    mirror = tmp_path / "mirror"
    wheels.publish(cached, mirror)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    conf = tmp_path / "pip.conf"
    with release_mirror(mirror, "127.0.0.1", port=port) as url:
        conf.write_bytes(overlay.pip_conf(url))
        env = {"PIP_CONFIG_FILE": str(conf), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        proc = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--no-cache-dir",
                               "--disable-pip-version-check", "--no-input", "--require-hashes",
                               "--only-binary=:all:", "-r", str(LOCK_SRC)],
                              capture_output=True, text=True, timeout=600, check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    src = Path(__file__).resolve().parents[2]
    check = subprocess.run([str(venv / "bin/python"), "-c", "import exporter.__main__"], capture_output=True,
                           text=True, timeout=60, check=False, env={"PYTHONPATH": str(src), "PATH": "/usr/bin"})
    assert check.returncode == 0, check.stderr
