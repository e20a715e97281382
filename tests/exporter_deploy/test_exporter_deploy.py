"""The contract exporter's deployment on the monitoring server (cloud_init/exporter_deploy.py).

Rendered config checked by the exporter's own loader for both client profiles; the unit by
`systemd-analyze verify`; the installer by shellcheck and by running it against stub tools; the bundle as
`qpool render` shows it under the monitoring host; nothing of it on a stack without poolContracts.
"""

from __future__ import annotations

import base64
import copy
import io
import re
import shutil
import subprocess
import tarfile
from functools import cache
from pathlib import Path

import pytest
import yaml

from cloud_init import exporter_deploy as ed
from cloud_init import monitoring
from core import ports
from core.config import StackConfig, load_stack_config
from exporter.config import load_config
from qpool.review import host_files, plan_stack
from qpool.stacks import load_stack

REPO = Path(__file__).resolve().parents[2]
SYSTEM_UNIT_DIRS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"REAL TOOL MISSING: {name} not on PATH (apt-get install {name}); this check did not run")
    return path


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, **kw)  # type: ignore[call-overload]


@cache
def stack(profile: str) -> StackConfig:
    """testnet as configured (gqrl), or the same stack on the gzond profile (Z addresses)."""
    raw = copy.deepcopy(load_stack("testnet").raw)
    if profile == "gzond":
        raw["clients"]["profile"] = "gzond"
        for pair in raw["validatorPairs"]:
            pair["feeRecipient"] = "Z" + pair["feeRecipient"][1:]
        raw["poolContracts"] = {k: "Z" + v[1:] if isinstance(v, str) else v for k, v in raw["poolContracts"].items()}
    return load_stack_config(raw)


def with_pool(cfg: StackConfig, **update: object) -> StackConfig:
    assert cfg.pool_contracts is not None
    return cfg.model_copy(update={"pool_contracts": cfg.pool_contracts.model_copy(update=update)})


# -- the exporter's config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["gqrl", "gzond"])
def test_rendered_config_passes_the_exporters_own_loader(profile: str, tmp_path: Path) -> None:
    cfg = stack(profile)
    path = tmp_path / "contract-exporter.yaml"
    path.write_text(ed.config_yaml(cfg))
    loaded = load_config(path)  # the function `python -m exporter --config` uses
    assert loaded.profile == profile
    assert loaded.profile_info.namespace == {"gqrl": "qrl", "gzond": "zond"}[profile]
    prefix = {"gqrl": "Q", "gzond": "Z"}[profile]
    assert cfg.pool_contracts is not None
    assert loaded.contracts.deposit_pool == cfg.pool_contracts.deposit_pool
    assert all(getattr(loaded.contracts, k).startswith(prefix) for k in ("deposit_pool", "stqrl", "validator_manager"))
    pair = cfg.validator_pairs[0]
    assert pair.active == "primary"
    assert loaded.rpc_url is None
    assert loaded.endpoints == [f"http://{h.private_ip}:{ports.EXECUTION_RPC}" for h in (pair.primary, pair.backup)]
    assert (loaded.listen_address, loaded.listen_port) == ("127.0.0.1", ports.CONTRACT_EXPORTER)
    assert str(loaded.state_dir) == ed.STATE_DIR == f"/var/lib/{ed.STATE_DIRECTORY}"
    assert loaded.interval_seconds == 30


def test_rpc_url_override_wins() -> None:
    cfg = stack("gqrl")
    cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(
        update={"contract_exporter_rpc_url": "https://rpc.example:8443/qrl"})})
    assert ed.exporter_config(cfg)["rpc_url"] == "https://rpc.example:8443/qrl"


def test_rpc_urls_cover_every_key_host_active_first() -> None:
    cfg = stack("gqrl")
    p1 = cfg.validator_pairs[0]
    p2 = p1.model_copy(update={
        "name": "p2", "active": "backup",
        "primary": p1.primary.model_copy(update={"private_ip": "10.42.1.31"}),
        "backup": p1.backup.model_copy(update={"private_ip": "10.42.1.32"}),
    })
    cfg = cfg.model_copy(update={"validator_pairs": [p1, p2]})
    rpc = ports.EXECUTION_RPC
    assert ed.exporter_config(cfg)["rpc_urls"] == [
        f"http://{p1.primary.private_ip}:{rpc}", f"http://{p1.backup.private_ip}:{rpc}",
        f"http://10.42.1.32:{rpc}", f"http://10.42.1.31:{rpc}",  # p2 signs on its backup: that one first
    ]


def test_every_rpc_endpoint_accepts_the_monitoring_host() -> None:
    """Each key host's rendered nftables accepts the endpoint's port from the monitoring IP (and no other IP)."""
    run_ = plan_stack("testnet").run
    files = host_files(run_)
    cfg = load_stack("testnet").config
    mon = cfg.monitoring.private_ip
    by_ip = {spec.private_ip: name for name, spec in ((h.name, h) for h in cfg.hosts())}
    for url in ed.rpc_urls(cfg):
        ip, port = url.removeprefix("http://").split(":")
        nft = files[by_ip[ip]]["files/etc/nftables.conf"].decode()
        accepts = [line.strip() for line in nft.splitlines() if re.search(rf"\b{port}\b", line) and "accept" in line]
        assert accepts, f"{by_ip[ip]}: nothing accepts port {port}"
        assert all(line.startswith(f"ip saddr {mon} ") for line in accepts), accepts


def test_address_with_a_wrong_checksum_fails_at_render_not_on_the_host() -> None:
    cfg = stack("gqrl")
    assert cfg.pool_contracts is not None
    bad = cfg.pool_contracts.stqrl.replace("d", "D", 1)  # mixed case, checksum now wrong
    assert bad != cfg.pool_contracts.stqrl
    with pytest.raises(ValueError, match=r"contracts\.stqrl"):
        ed.exporter_config(with_pool(cfg, stqrl=bad))


def test_scrape_target_is_where_the_exporter_listens() -> None:
    cfg = stack("gqrl")
    (job,) = [j for j in monitoring.scrape_jobs(cfg) if j["job_name"] == monitoring.JOB_CONTRACT_EXPORTER]
    conf = ed.exporter_config(cfg)
    assert job["static_configs"][0]["targets"] == [f"{conf['listen_address']}:{conf['listen_port']}"]
    assert job["scrape_interval"] == f"{conf['interval_seconds']}s"


# -- the unit --------------------------------------------------------------------------------------------

def _unit_root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    system = next((d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if system is None:
        pytest.skip("REAL TOOL MISSING: no systemd unit directory with sysinit.target on this machine")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system" / ed.UNIT_NAME).write_text(unit_text)
    exe = root / ed.VENV_DIR.lstrip("/") / "bin/python"  # stand-in: verify refuses missing executables
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return root


@pytest.mark.realtools
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    root = _unit_root(tmp_path, ed.unit())
    res = run([tool, "verify", f"--root={root}", f"/etc/systemd/system/{ed.UNIT_NAME}"])
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


@pytest.mark.realtools
def test_verify_would_catch_a_bad_unit(tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    root = _unit_root(tmp_path, ed.unit().replace("ProtectHome=yes", "ProtectHomme=yes"))
    (root / ed.VENV_DIR.lstrip("/") / "bin/python").unlink()
    res = run([tool, "verify", f"--root={root}", f"/etc/systemd/system/{ed.UNIT_NAME}"])
    out = res.stdout + res.stderr
    assert "ProtectHomme" in out and f"{ed.VENV_DIR}/bin/python" in out


def _unit_values(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_is_unprivileged_and_sandboxed() -> None:
    v = _unit_values(ed.unit())
    assert v["User"] == [ed.SERVICE_USER] and v["Group"] == [ed.SERVICE_USER]
    assert v["StateDirectory"] == [ed.STATE_DIRECTORY]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "PrivateDevices": "yes",
                       "RestrictSUIDSGID": "yes"}.items():
        assert v[key] == [value], key
    assert v["ExecStart"] == [f"{ed.VENV_DIR}/bin/python -m exporter --config {ed.CONFIG_PATH}"]
    assert f"PYTHONPATH={ed.SRC_DIR}" in v["Environment"]
    assert v["RestartPreventExitStatus"] == ["2"]  # bad config: the exporter's documented exit code


# -- the installer -----------------------------------------------------------------------------------------

@pytest.mark.realtools
def test_install_script_passes_shellcheck(tmp_path: Path) -> None:
    tool = need_tool("shellcheck")
    path = tmp_path / "qp-install-exporter"
    path.write_text(ed.install_script())
    res = run([tool, "--shell=bash", "--severity=style", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr


def _requirements(text: str) -> dict[str, tuple[str, list[str]]]:
    """name (normalised, extras dropped) -> (version, sha256 hashes) of a requirements file."""
    joined = text.replace("\\\n", " ")
    out = {}
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *opts = line.split()
        name, version = spec.split("==")
        name = re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()
        out[name] = (version, [o.removeprefix("--hash=sha256:") for o in opts if o.startswith("--hash=sha256:")])
    return out


def test_lock_is_exactly_the_exporters_pins_with_hashes() -> None:
    pins = _requirements((REPO / "exporter/requirements.txt").read_text())
    lock = _requirements(ed.LOCK_SRC.read_text())
    assert {n: v for n, (v, _) in lock.items()} == {n: v for n, (v, _) in pins.items()}
    for name, (_, hashes) in lock.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
    script = ed.install_script()
    assert "--require-hashes" in script and "--only-binary=:all:" in script and '-r "$LOCK"' in script


def _members(b64: str) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64))) as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers()}  # type: ignore[union-attr]


def test_bundle_carries_the_package_lock_config_unit_and_installer() -> None:
    cfg = stack("gqrl")
    members = _members(ed.bundle_b64(cfg))
    for src in sorted((REPO / "exporter").glob("*.py")):
        assert members[f"{ed.SRC_DIR}/exporter/{src.name}".lstrip("/")][0] == src.read_bytes(), src.name
    assert members[ed.INSTALL_SCRIPT.lstrip("/")][1] == 0o755
    for path in (ed.LOCK_PATH, ed.MANIFEST_PATH, ed.CONFIG_PATH, ed.UNIT_PATH):
        assert path.lstrip("/") in members, path
    manifest = members[ed.MANIFEST_PATH.lstrip("/")][0].decode()
    listed = {line.split("  ", 1)[1] for line in manifest.splitlines()}
    shipped = {p.removeprefix(ed.EXPORTER_HOME.lstrip("/") + "/") for p in members
               if p.startswith(ed.SRC_DIR.lstrip("/")) or p == ed.LOCK_PATH.lstrip("/")}
    assert listed == shipped
    assert ed.bundle_b64(cfg) == ed.bundle_b64(cfg)  # deterministic: the step re-runs only on change
    assert not any("secret" in p for p in members)


def test_no_exporter_without_pool_contracts() -> None:
    mainnet = load_stack("mainnet").config
    assert mainnet.pool_contracts is None
    assert ed.exporter_files(mainnet) == []
    assert monitoring.JOB_CONTRACT_EXPORTER not in {j["job_name"] for j in monitoring.scrape_jobs(mainnet)}


# -- the installer, run against stub tools -----------------------------------------------------------------

def _stub(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >>"$STUB_LOG"\n{body}\n')
    path.chmod(0o755)


class Host:
    """A scratch root with the bundle unpacked, the installer re-rooted into it, and stubs on PATH."""

    def __init__(self, tmp: Path, cfg: StackConfig) -> None:
        self.root = tmp / "root"
        self.log = tmp / "stub.log"
        self.log.write_text("")
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(ed.bundle_b64(cfg)))) as tar:
            tar.extractall(self.root, filter="data")
        self.home = self.root / ed.EXPORTER_HOME.lstrip("/")
        script = ed.install_script()
        for path in (ed.EXPORTER_HOME, ed.CONFIG_PATH):
            script = script.replace(path, str(self.root / path.lstrip("/")))
        self.script = tmp / "qp-install-exporter"
        self.script.write_text(script)
        self.script.chmod(0o755)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        # python3 -m venv DIR: a fake venv whose python logs its arguments
        _stub(self.bin, "python3", 'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
              "printf '#!/bin/bash\\necho \"venv-python $*\" >>\"$STUB_LOG\"\\n' >\"$3/bin/python\"; "
              'chmod +x "$3/bin/python"; fi')
        for name in ("systemctl", "curl", "useradd"):
            _stub(self.bin, name, "exit 0")
        _stub(self.bin, "getent", "exit 2")  # the user does not exist yet
        _stub(self.bin, "runuser", 'shift 3; exec "$@"')  # runuser -u USER -- CMD...

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "STUB_LOG": str(self.log)}
        return run(["/bin/bash", str(self.script)], env=env)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def need_root() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the installer refuses to run as non-root")


def test_installer_removes_files_an_older_release_left(tmp_path: Path, need_root: None) -> None:
    host = Host(tmp_path, stack("gqrl"))
    stale = host.home / "src/exporter/retired.py"
    stale.write_text("# from an older release\n")
    res = host.run()
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and (host.home / "src/exporter/collector.py").exists()


def test_installer_refuses_files_that_do_not_match_the_manifest(tmp_path: Path, need_root: None) -> None:
    host = Host(tmp_path, stack("gqrl"))
    (host.home / "src/exporter/rpc.py").write_text("import os; os.system('curl evil')\n")
    res = host.run()
    assert res.returncode != 0 and "do not match" in res.stderr


def test_installer_builds_the_venv_from_the_lock_once_and_starts_the_unit(tmp_path: Path, need_root: None) -> None:
    host = Host(tmp_path, stack("gqrl"))
    res = host.run()
    assert res.returncode == 0, res.stdout + res.stderr
    calls = host.calls()
    lock = str(host.home / "requirements.lock")
    pip = [c for c in calls if " -m pip install " in c]
    assert len(pip) == 1 and "--require-hashes --only-binary=:all: -r " + lock in pip[0]
    assert any(c.startswith("useradd --system") and c.endswith(ed.SERVICE_USER) for c in calls)
    assert any(c.startswith(f"runuser -u {ed.SERVICE_USER} --") and "--check-config" in c for c in calls)
    assert [c for c in calls if c.startswith("systemctl")] == [
        "systemctl daemon-reload", f"systemctl enable {ed.UNIT_NAME}", f"systemctl restart {ed.UNIT_NAME}"]
    assert any(c.startswith("curl") and f"127.0.0.1:{ports.CONTRACT_EXPORTER}/metrics" in c for c in calls)
    assert (host.home / "venv/.requirements.sha256").exists() and not (host.home / "venv.new").exists()

    host.log.write_text("")  # again, unchanged: no rebuild, still (re)started
    assert host.run().returncode == 0
    assert not any("-m venv" in c or "-m pip" in c for c in host.calls())
    assert f"systemctl restart {ed.UNIT_NAME}" in host.calls()


# -- what `qpool render` shows -----------------------------------------------------------------------------

@cache
def _rendered(stack_name: str) -> tuple[str, dict[str, bytes]]:
    files = host_files(plan_stack(stack_name).run)
    (host,) = [h for h in files if h.endswith("-monitoring")]
    return host, files[host]


def test_render_shows_the_step_and_every_file_under_the_monitoring_host() -> None:
    host, files = _rendered("testnet")
    steps = sorted(k for k in files if k.startswith("bootstrap/"))
    names = [s.split("-", 1)[1].removeprefix(f"{host}-").removesuffix(".sh") for s in steps]
    assert names[-2:] == ["start-monitoring", "contract-exporter"]
    script = files[steps[-1]].decode()
    assert ed.INSTALL_COMMAND in script and "# stdin: a tar of" in script
    for path in (ed.CONFIG_PATH, ed.UNIT_PATH, ed.INSTALL_SCRIPT, ed.LOCK_PATH, ed.MANIFEST_PATH,
                 f"{ed.SRC_DIR}/exporter/collector.py", f"{ed.SRC_DIR}/exporter/__main__.py"):
        assert f"files{path}" in files, path
    conf = yaml.safe_load(files[f"files{ed.CONFIG_PATH}"])
    assert conf["contracts"]["deposit_pool"] == load_stack("testnet").config.pool_contracts.deposit_pool  # type: ignore[union-attr]


def test_render_of_a_stack_without_contracts_has_no_exporter() -> None:
    _, files = _rendered("mainnet")
    assert not [k for k in files if "exporter" in k and "node-exporter" not in k]
    assert not [k for k in files if "contract" in k]
