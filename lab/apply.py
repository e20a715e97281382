"""`qpool lab apply`: a changed stack file applied to a running lab the way `pulumi up` would apply it.

The program runs again (lab/deploy.py's path, same overlay, same persisted state so unchanged resources get
identical inputs), its recorded resources are diffed against the last applied run kept in the lab state
(lab/state.py: per-input keyed digests, never secret values), the plan is printed like `pulumi preview`, and
the steps are carried out on the lab hosts with pulumi-command's semantics:

- a new Command runs its `create`; changed `triggers` replace it (create, then the old `delete` if any —
  Pulumi's default create-before-delete; delete first with deleteBeforeReplace); other changed inputs run
  `update` if set, else `create`; a removed Command runs its `delete` if any;
- a new server boots a new lab host with its user-data; a removed one is destroyed; a server change that
  Pulumi/hcloud does by replacement (location, image, user-data, SSH keys) is refused before anything runs;
  a server-type change (a Hetzner resize) power-cycles the lab host; inputs in `ignore_changes` are ignored
  (listed as deferred);
- other resources (networks, firewalls, volumes, keys, random values) have no lab action beyond the record.

Steps run in dependency order (the recorded dependencies, i.e. what Pulumi orders by), hosts in parallel;
the first failed step stops the apply with one line naming host and step. The applied record is updated
after every step, so a re-run continues where the failed one stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_init.base import ADMIN_USER
from lab import overlay
from lab.deploy import (
    LAB_SKIPPED_STEPS,
    LabDeployment,
    _scrub,
    _user_data_by_host,
    lab_program_run,
    mirror_url_of,
    release_mirror,
)
from lab.hosts import LabHost
from lab.net import LabError
from lab.session import LabSession
from lab.state import LabState
from qpool.plan_diff import COMMAND, SERVER, VOLUME, Change, Plan, base_record, diff, format_plan
from qpool.program import ProgramRun, RecordedResource
from qpool.stacks import load_stack

__all__ = ["COMMAND", "SERVER", "VOLUME", "ApplyError", "ApplyResult", "Change", "Plan", "apply", "diff", "format_plan",
           "record_run"]


def record_resource(run: ProgramRun, r: RecordedResource, state: LabState) -> dict[str, Any]:
    """What the lab keeps of one applied resource: keyed digests of its inputs, never their (secret) values."""
    plain = r.plain_inputs()
    rec = base_record(run, r, state.digest, plain)
    if r.type == COMMAND:
        for key in ("delete", "update"):  # needed to delete/update later; kept only when not secret
            if plain.get(key) and not r.input_is_secret(key):
                rec[key] = plain[key]
    return rec


def record_run(run: ProgramRun, state: LabState) -> list[dict[str, Any]]:
    return [record_resource(run, r, state) for r in run.resources]


# -- carrying it out ---------------------------------------------------------------------------------------

@dataclass
class ApplyResult:
    plan: Plan
    #: "<host>: <step> <create|update|delete>" for every Command that ran on a host, in completion order
    ran: list[str] = field(default_factory=list)
    #: every change carried out (including record-only ones), by resource name
    applied: list[str] = field(default_factory=list)
    seconds: float = 0.0


class ApplyError(LabError):
    """A refused plan or a failed step: one line naming the host and the step."""


def apply(dep: LabDeployment, config_file: Path, *, log: Callable[[str], None] = print, dry_run: bool = False,
          session: LabSession | None = None) -> ApplyResult:
    """Apply ``config_file`` to the running lab ``dep`` as `pulumi up` would (see the module docstring).

    With the lab's ``session``, new hosts join its fake Hetzner API and inventory, and the inventory's stack
    file becomes the applied one (what `qpool status`/`failover` read). ``dry_run`` prints the plan and stops.
    """
    started = time.monotonic()
    state = LabState(dep.state_dir)
    old_records = state.load_applied()
    if old_records is None:
        raise ApplyError(f"lab {dep.stack}: no applied run in {dep.state_dir} (lab started before `lab apply` "
                         "existed?); `qpool lab down` and `lab up` again")
    loaded = load_stack(dep.stack, config_file)
    lab_cfg, run, lab_secrets = lab_program_run(dep.stack, loaded.raw, loaded.config, dep.state_dir,
                                                mirror_url_of(dep.network))
    new_records = record_run(run, state)
    plan = diff(old_records, new_records)
    for line in format_plan(plan, dep.stack):
        log(line)
    result = ApplyResult(plan=plan)
    if plan.refusals:
        raise ApplyError(plan.refusals[0])
    if dry_run or plan.empty:
        result.seconds = time.monotonic() - started
        return result

    dep.config, dep.run, dep.secrets = lab_cfg, run, lab_secrets
    executor = _Executor(dep, run, state, old_records, new_records, log, result,
                         session.host_added if session is not None else None)
    try:
        with release_mirror(dep.state_dir / "mirror", dep.network.bridge_ip):
            executor.execute(plan)
    finally:
        if session is not None:
            session.write_inventory()
    dep.config_source = loaded.path
    if session is not None:
        session.config_applied(loaded.path)
    result.seconds = time.monotonic() - started
    log(f"apply done: {plan.summary} ({result.seconds:.1f}s)")
    return result


class _Executor:
    """Runs a plan's changes in dependency order (hosts in parallel) and keeps the applied record current."""

    def __init__(self, dep: LabDeployment, run: ProgramRun, state: LabState,
                 old_records: list[dict[str, Any]], new_records: list[dict[str, Any]], log: Callable[[str], None],
                 result: ApplyResult, on_host_added: Callable[[str], None] | None) -> None:
        self.dep, self.run, self.state = dep, run, state
        self.log, self.result, self.on_host_added = log, result, on_host_added
        self.records = {(r["type"], r["name"]): r for r in old_records}
        self.order = [(r["type"], r["name"]) for r in old_records]
        self.new = {(r["type"], r["name"]): r for r in new_records}
        self.by_name = {(r.type, r.name): r for r in run.resources}
        self.lock = threading.Lock()

    # the record ------------------------------------------------------------------------------------------
    def _commit(self, change: Change) -> None:
        key = (change.type, change.name)
        with self.lock:
            if change.op == "delete":
                self.records.pop(key, None)
                self.order = [k for k in self.order if k != key]
            else:
                rec = dict(self.new[key])
                old = self.records.get(key)
                if old is not None:  # ignored inputs keep their applied value, as in Pulumi's state
                    rec["inputs"] = {**rec["inputs"], **{k: old["inputs"][k] for k in rec["ignore_changes"]
                                                         if k in old["inputs"]}}
                self.records[key] = rec
                if key not in self.order:
                    self.order.append(key)
            new_pos = {k: i for i, k in enumerate(self.new)}
            ordered = sorted(self.order, key=lambda k: new_pos.get(k, len(new_pos)))
            self.state.save_applied([self.records[k] for k in ordered])
            self.result.applied.append(change.name)

    # scheduling --------------------------------------------------------------------------------------------
    def execute(self, plan: Plan) -> None:
        forward = [c for c in plan.changes if c.op != "delete"]
        planned = {c.name for c in forward}
        urn_name = {r.urn: r.name for r in self.run.resources}
        deps: dict[str, set[str]] = {}
        for c in forward:
            r = self.by_name[(c.type, c.name)]
            wanted = {urn_name.get(u) for u in r.dependencies} | ({r.parent} if r.parent else set())
            deps[c.name] = {d for d in wanted if d in planned and d != c.name}
        done: set[str] = set()
        pending = list(forward)
        running: dict[Future[None], Change] = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(1, len(self.dep.hosts) + 4)) as pool:
            while pending or running:
                if failure is None:
                    for c in [c for c in pending if deps[c.name] <= done]:
                        pending.remove(c)
                        running[pool.submit(self._carry_out, c)] = c
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    c = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        failure = failure or exc
                    else:
                        done.add(c.name)
        if failure is not None:
            raise failure
        if pending:
            raise ApplyError(f"apply stopped: {len(pending)} step(s) wait on each other ({pending[0].name})")
        for c in [c for c in plan.changes if c.op == "delete"]:
            self._carry_out(c)

    # one change ------------------------------------------------------------------------------------------
    def _carry_out(self, change: Change) -> None:
        if change.type == COMMAND:
            self._command(change)
        elif change.type == SERVER:
            self._server(change)
        else:
            self.log(f"{change.name}: {change.op} (recorded; no lab action for {change.type})")
        self._commit(change)

    def _command(self, change: Change) -> None:
        if any(marker in change.name for marker in LAB_SKIPPED_STEPS):
            self.log(f"{change.host}: {change.step} skipped in the lab")
            return
        old = self.records.get((change.type, change.name))
        if change.op == "delete":
            self._run_old_delete(change, old)
            return
        cmd = self.by_name[(change.type, change.name)]
        inputs = cmd.plain_inputs()
        if change.op == "replace" and old is not None and old.get("delete_before_replace"):
            self._run_old_delete(change, old)
        script = inputs.get("update") if change.op == "update" and inputs.get("update") else inputs["create"]
        verb = "update" if change.op == "update" and inputs.get("update") else "create"
        self._ssh(change.host or "", change, verb, script, inputs.get("stdin"),
                  [str(inputs.get("stdin") or "")] if cmd.input_is_secret("stdin") else [])
        if change.op == "replace" and old is not None and not old.get("delete_before_replace"):
            self._run_old_delete(change, old)

    def _run_old_delete(self, change: Change, old: dict[str, Any] | None) -> None:
        script = (old or {}).get("delete")
        host = (old or {}).get("host") or change.host
        if script and host in self.dep.hosts:
            self._ssh(host, change, "delete", script, None, [])

    def _ssh(self, host: str, change: Change, verb: str, script: str, stdin: Any, extra_secrets: list[str]) -> None:
        started = time.monotonic()
        proc = self.dep.deploy_ssh(host, script, input=str(stdin).encode() if stdin else None, timeout=900)
        self.log(f"{host}: {change.step} {verb} rc={proc.returncode} ({time.monotonic() - started:.1f}s)")
        with self.lock:
            self.result.ran.append(f"{host}: {change.step} {verb}")
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else str(proc.stderr)
            tail = " | ".join(line for line in err.strip().splitlines()[-3:] if line.strip())
            secret_values = [*self.dep.secrets.values(), *extra_secrets]
            raise ApplyError(f"{host}: step {change.step} ({verb}) failed (rc {proc.returncode}): "
                             f"{_scrub(tail[-500:], secret_values)}; fix and re-run `qpool lab apply` "
                             "(applied steps are recorded and not repeated)")

    def _server(self, change: Change) -> None:
        old = self.records.get((change.type, change.name))
        if change.op == "create":
            self._boot(self.run.by_name(change.name).plain_inputs()["name"])
        elif change.op == "delete":
            name = (old or {}).get("server") or change.host
            host = self.dep.hosts.pop(name, None)
            if host is not None:
                self.log(f"{name}: destroying the lab host (server deleted)")
                host.destroy()
        elif change.power_cycle:
            name = self.run.by_name(change.name).plain_inputs()["name"]
            self._power_cycle(name)
        else:
            self.log(f"{change.name}: update {', '.join(change.keys)} (recorded; nothing to do on a lab host)")

    def _boot(self, name: str) -> None:
        dep = self.dep
        spec = dep.spec(name)
        stale = dep.hosts.pop(name, None)
        if stale is not None:  # a boot an earlier, failed apply started: the create starts over, like Pulumi's
            self.log(f"{name}: removing the lab host a failed apply left half-created")
            stale.destroy()
        with self.lock:
            others = list(dep.hosts.values())
        image = others[0].base_image if others else _base_image(self.log)
        host = LabHost(spec.name, spec.private_ip, dep.network, image, dep.state_dir / "hosts" / spec.name)
        host.pinned_host_key = self.run.outputs["hostKeys"][name]  # the program's key, never read from the host
        lab_ud, volume_paths = overlay.lab_user_data(_user_data_by_host(self.run)[name])
        for i, mount_point in enumerate(volume_paths):
            volume = dep.state_dir / "volumes" / spec.name / str(i)
            volume.mkdir(parents=True, exist_ok=True)
            host.binds[volume] = mount_point
        if spec.is_key_host:  # the chain's view of every host's votes (lab/overlay.py item 7)
            host.binds[overlay.gossip_dir(dep.state_dir)] = overlay.GOSSIP_GUEST_DIR
        extra = (overlay.standin_dropins(dep.config.clients.profile, dep.clock.slot_seconds, dep.clock.slots_per_epoch,
                                         dep.clock.genesis_time, overlay.pool_contracts_env(dep.config))
                 if spec.is_key_host else overlay.monitoring_extra_files(mirror_url_of(dep.network)))
        self.log(f"{name}: booting a new lab host ({spec.role}, {spec.private_ip})")
        with self.lock:  # one boot at a time: the network's claims and address book are not thread-safe
            dep.hosts[name] = host
            host.boot(lab_ud, extra_files=extra)
        host.wait_ready(ADMIN_USER, dep.operator_key, timeout=600)
        self.log(f"{name}: cloud-init done")
        if self.on_host_added is not None:
            self.on_host_added(name)

    def _power_cycle(self, name: str) -> None:
        host = self.dep.hosts[name]
        self.log(f"{name}: power cycle (server type change: Hetzner powers the server off to resize it)")
        host.power_off(hard=False)
        host.power_on()
        deadline = time.monotonic() + 300
        while True:
            proc = self.dep.ssh(name, "systemctl is-system-running --wait || true", timeout=120)
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ApplyError(f"{name}: did not answer on SSH within 300 s after its power cycle")
            time.sleep(1)


def _base_image(log: Callable[[str], None]) -> Path:
    from lab.image import LAB_ROLE_PACKAGES, build_base_image

    return build_base_image(extra_packages=LAB_ROLE_PACKAGES, log=log)

