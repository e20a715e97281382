"""`qpool lab up`: the stack's topology on local nspawn hosts, deployed by the program's own output.

The program runs under the recording mocks (qpool.program) with the lab overlay (lab/overlay.py); each
recorded server becomes a lab host booted with the rendered user-data, and each recorded
`remote.Command` runs over SSH in registration order with its real inputs — the same steps, in the same
order, with the same stdin that `pulumi up` would send.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import ipaddress
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_init.base import ADMIN_USER, DEPLOY_USER
from core.config import HostSpec, StackConfig, load_stack_config
from lab import overlay
from lab.hosts import LabHost
from lab.image import LAB_ROLE_PACKAGES, build_base_image
from lab.net import LabError, LabNetwork
from lab.standins.build import build as build_standins
from lab.state import LabState
from lab.wheels import exporter_wheels, publish
from qpool.program import ProgramRun, run_program
from qpool.progress import progress_of
from qpool.review import host_of
from qpool.stacks import load_stack

LAB_ROOT = Path("/var/lib/quantapool-lab")
MIRROR_PORT = 8088
COMMAND = "command:remote:Command"
SERVER = "hcloud:index/server:Server"


@dataclass(frozen=True)
class LabClock:
    """The stand-ins' chain clock; short in tests, real Zond timing (60 s, 128 slots) for drills."""

    slot_seconds: float = 12.0
    slots_per_epoch: int = 8
    genesis_time: int = field(default_factory=lambda: int(time.time()) - 3600)


@dataclass
class LabDeployment:
    stack: str
    config: StackConfig
    run: ProgramRun
    network: LabNetwork
    hosts: dict[str, LabHost]
    state_dir: Path
    deploy_key: Path
    secrets: dict[str, str]
    clock: LabClock
    config_source: Path
    #: The lab operator's key (admin user, full sudo): what the lab and its tests inspect hosts with.
    operator_key: Path

    def host(self, name: str) -> LabHost:
        return self.hosts[name]

    def ssh(self, name: str, cmd: str, *, input: bytes | None = None, timeout: float = 60,
            check: bool = False) -> Any:
        """Run `cmd` as the lab's operator (the admin user, full sudo): inspection and fault injection."""
        return self.hosts[name].ssh(cmd, user=ADMIN_USER, key_path=self.operator_key, input=input,
                                    timeout=timeout, check=check)

    def deploy_ssh(self, name: str, cmd: str, *, input: bytes | None = None, timeout: float = 60,
                   check: bool = False) -> Any:
        """Run `cmd` as the deploy identity (sudo: the qp-* tools only), as Pulumi's steps and qpool do."""
        return self.hosts[name].ssh(cmd, user=DEPLOY_USER, key_path=self.deploy_key, input=input,
                                    timeout=timeout, check=check)

    def spec(self, name: str) -> HostSpec:
        return next(h for h in self.config.hosts() if h.name == name)


def bridge_ip(cfg: StackConfig) -> str:
    """The operator side of the lab bridge: the subnet's last usable address (never a configured host)."""
    subnet = ipaddress.IPv4Network(cfg.network.subnet)
    used = {h.private_ip for h in cfg.hosts()}
    for candidate in reversed(list(subnet.hosts())):
        if str(candidate) not in used:
            return str(candidate)
    raise LabError(f"no free address in {subnet} for the lab bridge")


def lab_name(stack: str) -> str:
    """Short and unique per stack, so labs of different stacks never share kernel object names."""
    return "qp" + hashlib.sha256(stack.encode()).hexdigest()[:8]


# -- the program under mocks with lab values -----------------------------------------------------------

def lab_state_overrides(cfg: StackConfig, state: LabState) -> dict[str, Callable[..., dict]]:
    """Provider outputs with lab values. Generated values derive from the lab's seed (lab/state.py), so every
    run of the program gives unchanged resources the same inputs, as Pulumi's state would."""
    ips = {h.name: h.private_ip for h in cfg.hosts()}
    private, public = state.deploy_key()

    def server(args: Any, _n: int) -> dict:
        return {"ipv4Address": ips[args.inputs["name"]]}

    def private_key(args: Any, _n: int) -> dict:
        if args.name == "qp-deploy-key":
            return {"publicKeyOpenssh": public + "\n", "privateKeyOpenssh": private, "privateKeyPem": private}
        if args.inputs.get("algorithm") == "ED25519":  # e.g. the backup-shipping key: real, like pulumi-tls's
            other_private, other_public = state.ed25519_openssh(args.name)
            return {"publicKeyOpenssh": other_public + "\n", "privateKeyOpenssh": other_private,
                    "privateKeyPem": other_private}
        return {}

    def random_bytes(args: Any, _n: int) -> dict:
        raw = state.derive("randomBytes", args.name, int(args.inputs.get("length", 32)))
        return {"hex": raw.hex(), "base64": base64.b64encode(raw).decode()}

    def random_password(args: Any, _n: int) -> dict:
        length = int(args.inputs["length"])
        text = base64.urlsafe_b64encode(state.derive("randomPassword", args.name, length)).decode()
        return {"result": text[:length]}

    return {
        SERVER: server,
        "tls:index/privateKey:PrivateKey": private_key,
        "random:index/randomBytes:RandomBytes": random_bytes,
        "random:index/randomPassword:RandomPassword": random_password,
    }


def mirror_url_of(network: LabNetwork) -> str:
    return f"http://{network.bridge_ip}:{MIRROR_PORT}"


def lab_program_run(stack: str, raw: dict[str, Any], cfg: StackConfig, state_dir: Path,
                    mirror_url: str) -> tuple[StackConfig, ProgramRun, dict[str, str]]:
    """Run the program with the lab overlay and the lab's persisted state: (lab config, run, lab secrets).

    The one path behind `lab up` and `lab apply`: the same config always gives the same recorded inputs."""
    state = LabState(state_dir)
    mirror_root = state_dir / "mirror"
    artifacts = {name: mirror_root / name for name in ("gzond", "gqrl", "beacon-chain", "validator")}
    network_files = overlay.standin_network_files(mirror_root / "network", cfg)
    lab_secret_values = {**state.lab_secrets([p.name for p in cfg.validator_pairs]), **state.extra_secrets()}
    lab_raw = overlay.lab_raw_config(raw, cfg, mirror_url, artifacts, network_files)
    # The lab's operator logs in as the admin user (full sudo), as a team member's own key would.
    operator_public = state.operator_key()[1]
    lab_raw["operatorSshKeys"] = [*(k for k in lab_raw.get("operatorSshKeys") or [] if k.strip() != operator_public),
                                  operator_public]
    lab_cfg = load_stack_config(lab_raw, secrets_present=set(lab_secret_values))
    run = run_program(stack, lab_raw, lab_secret_values, state_overrides=lab_state_overrides(lab_cfg, state))
    return lab_cfg, run, lab_secret_values


# -- release mirror -------------------------------------------------------------------------------------

@contextlib.contextmanager
def release_mirror(root: Path, address: str, port: int = MIRROR_PORT) -> Iterator[str]:
    """Serve `root` over HTTP on the bridge while hosts install their pinned clients."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((address, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="lab-mirror", daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{port}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- deployment -----------------------------------------------------------------------------------------

def _user_data_by_host(run: ProgramRun) -> dict[str, str]:
    return {s.plain_inputs()["name"]: s.plain_inputs()["userData"] for s in run.of_type(SERVER)}


def _commands_by_host(run: ProgramRun) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for cmd in run.of_type(COMMAND):
        host = host_of(run, cmd)
        if host is not None:
            out.setdefault(host, []).append(cmd)
    return out


def _scrub(text: str, values: list[str]) -> str:
    for value in values:
        if value and len(value) >= 8:
            text = text.replace(value, "[secret]")
    return text


#: Recorded steps the lab does not run (README: lab differences): Grafana is not installed in the lab.
LAB_SKIPPED_STEPS = ("-secret-grafana-",)


def run_bootstrap(dep: LabDeployment, host: str, commands: list[Any], log: Callable[[str], None],
                  on_step: Callable[[], None] | None = None) -> None:
    """Run one host's recorded Commands in order, as pulumi-command would (fail on the first error).

    ``on_step`` is called after every step (finished or skipped), for progress across hosts."""
    secret_values = [v for v in dep.secrets.values()]
    for cmd in commands:
        if any(marker in cmd.name for marker in LAB_SKIPPED_STEPS):
            log(f"{host}: {cmd.name.removeprefix(host + '-')} skipped in the lab")
            if on_step is not None:
                on_step()
            continue
        inputs = cmd.plain_inputs()
        stdin = inputs.get("stdin")
        started = time.monotonic()
        proc = dep.deploy_ssh(host, inputs["create"], input=stdin.encode() if stdin else None, timeout=900)
        log(f"{host}: {cmd.name.removeprefix(host + '-')} rc={proc.returncode} ({time.monotonic() - started:.1f}s)")
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else str(proc.stderr)
            raise LabError(f"{host}: bootstrap step {cmd.name} failed (rc {proc.returncode}): "
                           f"{_scrub(err.strip()[-2000:], secret_values)}")
        if on_step is not None:
            on_step()


def deploy(stack: str, *, config_file: Path | None = None, state_root: Path = LAB_ROOT,
           clock: LabClock | None = None, log: Callable[[str], None] = print,
           base_image: Path | None = None) -> LabDeployment:
    """Build, boot and bootstrap the whole stack locally; returns a handle for tests and the CLI."""
    clock = clock or LabClock()
    progress = progress_of(log)
    loaded = load_stack(stack, config_file)
    cfg = loaded.config
    state_dir = state_root / stack
    if state_dir.exists():
        raise LabError(f"lab for stack {stack} exists at {state_dir}; run `qpool lab down --stack {stack}` first")
    state_dir.mkdir(parents=True)
    network = LabNetwork(lab_name(stack), cfg.network.subnet, bridge_ip(cfg))
    started = time.monotonic()
    image = base_image or build_base_image(extra_packages=LAB_ROLE_PACKAGES, log=log)
    progress.done("image", f"base image ready ({time.monotonic() - started:.1f}s): {image}")

    mirror_root = state_dir / "mirror"
    progress.update("prepare", "building the stand-in clients and running the program under mocks")
    build_standins(mirror_root)
    if cfg.pool_contracts is not None:  # the contract exporter installs from the mirror (lab/overlay.py, item 5)
        publish(exporter_wheels(), mirror_root)
    state = LabState(state_dir)
    key_path = state.deploy_key_path
    state.deploy_key()
    state.operator_key()
    network.create()
    hosts: dict[str, LabHost] = {}
    dep: LabDeployment | None = None
    try:
        with release_mirror(mirror_root, network.bridge_ip) as mirror_url:
            lab_cfg, run, lab_secret_values = lab_program_run(stack, loaded.raw, cfg, state_dir, mirror_url)
            dep = LabDeployment(stack=stack, config=lab_cfg, run=run, network=network, hosts=hosts,
                                state_dir=state_dir, deploy_key=key_path, secrets=lab_secret_values, clock=clock,
                                operator_key=state.operator_key_path,
                                config_source=loaded.path)
            user_data = _user_data_by_host(run)
            dropins = overlay.standin_dropins(lab_cfg.clients.profile, clock.slot_seconds, clock.slots_per_epoch,
                                              clock.genesis_time, overlay.pool_contracts_env(lab_cfg))
            for i, spec in enumerate(lab_cfg.hosts()):
                progress.update("boot", f"booting {spec.name}", current=i, total=len(lab_cfg.hosts()))
                host_dir = state_dir / "hosts" / spec.name
                host = LabHost(spec.name, spec.private_ip, network, image, host_dir)
                # pinned from the program's output, never read from the host (issue 13)
                host.pinned_host_key = run.outputs["hostKeys"][spec.name]
                hosts[spec.name] = host
                lab_ud, volume_paths = overlay.lab_user_data(user_data[spec.name])
                for i, mount_point in enumerate(volume_paths):
                    volume = state_dir / "volumes" / spec.name / str(i)
                    volume.mkdir(parents=True, exist_ok=True)
                    host.binds[volume] = mount_point
                if spec.is_key_host:  # the chain's view of every host's votes (overlay item 7)
                    host.binds[overlay.gossip_dir(state_dir)] = overlay.GOSSIP_GUEST_DIR
                host.boot(lab_ud, extra_files=dropins if spec.is_key_host
                          else overlay.monitoring_extra_files(mirror_url))
            progress.done("boot", f"{len(hosts)} hosts booting ({time.monotonic() - started:.1f}s)")
            for ready, host in enumerate(hosts.values()):
                progress.update("cloud-init", f"waiting for cloud-init (sshd, users, packages) on {host.name}",
                                current=ready, total=len(hosts))
                host.wait_ready(ADMIN_USER, state.operator_key_path, timeout=600)
            progress.done("cloud-init", f"cloud-init done on all hosts ({time.monotonic() - started:.1f}s)")
            commands = _commands_by_host(run)
            total_steps = sum(len(commands.get(name, [])) for name in hosts)
            finished = [0]
            counter = threading.Lock()

            def step_done() -> None:
                with counter:
                    finished[0] += 1
                    progress.update("bootstrap", "bootstrap steps over SSH (the recorded pulumi-command steps)",
                                    current=finished[0], total=total_steps)

            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                futures = [pool.submit(run_bootstrap, dep, name, commands.get(name, []), log, step_done)
                           for name in hosts]
                for fut in futures:
                    fut.result()
            progress.done("bootstrap", f"bootstrap done: {total_steps} steps on {len(hosts)} hosts "
                                       f"({time.monotonic() - started:.1f}s)")
        log(f"lab {stack} up in {time.monotonic() - started:.1f}s")
        _write_state(dep)
        from lab.apply import record_run  # the applied run: what `qpool lab apply` diffs against

        state.save_applied(record_run(run, state))
        return dep
    except BaseException:
        progress.close()
        for host in hosts.values():
            with contextlib.suppress(Exception):
                host.destroy()
        with contextlib.suppress(Exception):
            network.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)
        raise


def _write_state(dep: LabDeployment) -> None:
    state = {
        "stack": dep.stack,
        "bridge_ip": dep.network.bridge_ip,
        "deploy_key": str(dep.deploy_key),
        "operator_key": str(dep.operator_key),
        "hosts": {name: {"ip": h.ip, "role": dep.spec(name).role, "pair": dep.spec(name).pair}
                  for name, h in dep.hosts.items()},
        "clock": {"slot_seconds": dep.clock.slot_seconds, "slots_per_epoch": dep.clock.slots_per_epoch,
                  "genesis_time": dep.clock.genesis_time},
    }
    (dep.state_dir / "lab.json").write_text(json.dumps(state, indent=2) + "\n")


def teardown(dep: LabDeployment) -> None:
    for host in dep.hosts.values():
        with contextlib.suppress(Exception):
            host.destroy()
    with contextlib.suppress(Exception):
        dep.network.destroy()
    shutil.rmtree(dep.state_dir, ignore_errors=True)


def temp_state_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="qp-lab-"))


def replace_host(dep: LabDeployment, name: str, log: Callable[[str], None] = print) -> LabHost:
    """What `pulumi up` does after a lost server and its volume are re-created: a fresh disk and data volume,
    the same rendered user-data, then that host's recorded bootstrap Commands again (keys imported LOCKED).

    Why here: restore drills need a genuinely new host on the old name and address. The LabHost object is
    reused so the session's fake Hetzner API keeps controlling (fencing) the new machine; the same user-data
    gives it the same program-generated SSH host key, pinned again by wait_ready(), as on a real replacement.
    """
    host = dep.hosts[name]
    spec = dep.spec(name)
    host.destroy()
    for volume in host.binds:
        if volume == overlay.gossip_dir(dep.state_dir):
            continue  # shared by every host (the chain's memory of votes), not this host's volume
        shutil.rmtree(volume, ignore_errors=True)
        volume.mkdir(parents=True)
    lab_ud, _paths = overlay.lab_user_data(_user_data_by_host(dep.run)[name])
    mirror_url = f"http://{dep.network.bridge_ip}:{MIRROR_PORT}"
    extra = (overlay.standin_dropins(dep.config.clients.profile, dep.clock.slot_seconds, dep.clock.slots_per_epoch,
                                     dep.clock.genesis_time, overlay.pool_contracts_env(dep.config))
             if spec.is_key_host else overlay.monitoring_extra_files(mirror_url))
    with release_mirror(dep.state_dir / "mirror", dep.network.bridge_ip):
        host.boot(lab_ud, extra_files=extra)
        host.wait_ready(ADMIN_USER, dep.operator_key, timeout=600)
        run_bootstrap(dep, name, _commands_by_host(dep.run).get(name, []), log)
    return host
