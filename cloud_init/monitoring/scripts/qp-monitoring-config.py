#!/usr/bin/python3
"""Check, then reload, the monitoring host's configuration (bundle monitoring-config, cloud_init/bundles.py).

The bundle applier runs this twice (root; QP_BUNDLE_ROOT re-roots every host path, for tests):

`qp-monitoring-config check STAGED` (the bundle's check, on the STAGED copies, before anything is
installed): every JSON/YAML file parses; `promtool check rules` on each rule file; `promtool check config`
on the staged prometheus.yml with its rule_files pointed at the staged rules; `amtool check-config` on the
Alertmanager template (placeholders replaced by dummies, so the message can be shown) and on the real
rendering (the staged qp-alertmanager-config filling in the host's secret files into a private temp dir;
its messages never quote a secret). A failure prints ONE line naming the file and the tool's message and
exits 1: the applier then installs nothing and the running services keep their files.

`qp-monitoring-config reload` (the bundle's on-change action, after the applier installed the changed
files): compares the live files with the last configuration that reloaded successfully (kept under
LAST_GOOD), and for what differs: Prometheus and Alertmanager reloaded by SIGHUP (`systemctl reload`;
restarted when their flags or unit drop-in changed; alertmanager.yml re-rendered strictly first), Grafana
restarted when grafana.ini or provisioning changed (its file provider picks up dashboards by itself); then
verifies the reload took (`prometheus_config_last_reload_successful` / `alertmanager_config_last_reload_
successful` = 1 with a success timestamp after the reload). On success the live files become the last
good copy; on a failure the last good files are put back and reloaded, and the step fails with one line.
A service that is not running is not touched (its next start reads the new files).

Stdlib + PyYAML only (Debian's python3-yaml). Design: docs/monitoring.md ("Configuration changes").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

PROG = "qp-monitoring-config"
#: The bundle's manifest for this script (cloud_init/monitoring/files.py writes it), relative to a root.
MANIFEST = "etc/quantapool/monitoring-config.json"
#: The last configuration that reloaded successfully, at host paths below this directory.
LAST_GOOD = "var/lib/quantapool/monitoring-config/last-good"
PLACEHOLDER = re.compile(r"@@file:(/[A-Za-z0-9._/-]+)@@")
DUMMY_VALUE = "https://placeholder.invalid/secret"
RELOAD_WAIT_SECONDS = 30.0


class Failed(Exception):
    """One line for the operator: which file or service, and what the tool said."""


def one_line(text: str, limit: int = 400) -> str:
    line = " | ".join(s.strip() for s in text.splitlines() if s.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise Failed(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise Failed(f"{what}: {argv[0]} timed out") from None


class Host:
    """Host paths under a root ("/" on a host; a temp dir in tests) and the manifest read from it."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root, self.m = root, manifest

    def at(self, host: str) -> Path:
        return self.root / host.lstrip("/")

    def rule_files(self) -> list[str]:
        d = self.m["prometheus"]["rules_dir"].rstrip("/") + "/"
        return sorted(h for h in self.m["files"] if h.startswith(d) and h.endswith(".yml"))

    def shown(self, text: str) -> str:
        """Tool output with the root (staging dir) stripped: host paths only."""
        r = str(self.root).rstrip("/")
        return text.replace(r + "/", "/") if r else text


# -- check: the staged copies ------------------------------------------------------------------------------
def promtool_message(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (res.stderr + res.stdout).splitlines()
             if ln.strip() and not ln.startswith("Checking ") and ln.strip() not in ("FAILED:", "SUCCESS")]
    return one_line("\n".join(lines))


def check(staged: Host, live: Host) -> None:
    for host in sorted(staged.m["files"]):
        path = staged.at(host)
        if not path.is_file():
            raise Failed(f"{host}: missing from the staged bundle")
        try:
            if host.endswith(".json"):
                json.loads(path.read_text())
            elif host.endswith((".yml", ".yaml", ".yml.in")):
                yaml.safe_load(path.read_text())
        except (ValueError, yaml.YAMLError) as exc:
            kind = "JSON" if host.endswith(".json") else "YAML"
            raise Failed(f"{host}: not valid {kind}: {staged.shown(one_line(str(exc)))}") from None
    for host in staged.rule_files():
        res = run(["promtool", "check", "rules", str(staged.at(host))], f"{host}: promtool")
        if res.returncode != 0:
            raise Failed(f"{host}: promtool check rules: {staged.shown(promtool_message(res))}")
    check_prometheus_config(staged)
    check_alertmanager(staged, live)


def check_prometheus_config(staged: Host) -> None:
    host = staged.m["prometheus"]["config"]
    doc = yaml.safe_load(staged.at(host).read_text()) or {}
    # rule_files name host paths (relative ones: to the config's directory, as Prometheus reads them):
    # promtool must read the staged rules, not the live ones
    base = Path(host).parent
    doc["rule_files"] = [str(staged.at(str(base / p))) for p in doc.get("rule_files") or []]
    with tempfile.TemporaryDirectory(prefix="qp-prom-check.") as tmp:
        cfg = Path(tmp) / Path(host).name
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        res = run(["promtool", "check", "config", str(cfg)], f"{host}: promtool")
        if res.returncode != 0:
            msg = promtool_message(res).replace(str(cfg), host)
            raise Failed(f"{host}: promtool check config: {staged.shown(msg)}")


def check_alertmanager(staged: Host, live: Host) -> None:
    am = staged.m["alertmanager"]
    host = am["template"]
    with tempfile.TemporaryDirectory(prefix="qp-am-check.") as tmp:
        # (a) the template itself, secrets replaced by dummies: amtool's message may be shown
        dummy = Path(tmp) / "alertmanager.yml.in"
        dummy.write_text(PLACEHOLDER.sub(DUMMY_VALUE, staged.at(host).read_text()))
        res = run(["amtool", "check-config", str(dummy)], f"{host}: amtool")
        if res.returncode != 0:
            text = re.sub(r"Checking '[^']*'\s*", "", res.stdout + res.stderr)
            text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("amtool: error: failed to validate"))
            msg = one_line(text).replace(str(dummy), host)
            raise Failed(f"{host}: amtool check-config: {staged.shown(msg)}")
        # (b) the real rendering with the host's secrets, by the staged renderer (it runs amtool itself and
        # never prints a secret); the result stays in this 0700 temp dir and is deleted with it
        res = render_alertmanager(staged.at(am["renderer"]), staged.at(host), Path(tmp) / "alertmanager.yml",
                                  am["secrets_dir"], group="")
        if res.returncode != 0:
            raise Failed(f"{host}: {one_line(res.stderr or res.stdout)}")


def render_alertmanager(renderer: Path, template: Path, output: Path, secrets_dir: str, group: str,
                        ) -> subprocess.CompletedProcess:
    """The renderer reads the secret files under QP_BUNDLE_ROOT itself (the environment is passed on)."""
    return run([sys.executable, str(renderer), "--template", str(template), "--output", str(output),
                "--secrets-dir", secrets_dir, "--group", group], "qp-alertmanager-config")


# -- reload: the installed files -------------------------------------------------------------------------
class Reload:
    def __init__(self, live: Host, wait: float) -> None:
        self.live, self.wait = live, wait
        self.good = Host(live.at("/" + LAST_GOOD), live.m)

    def tracked(self) -> list[str]:
        """Every file of the bundle now, and every file of the last good copy (a removed rule file counts)."""
        paths = set(self.live.m["files"])
        if self.good.root.is_dir():
            paths |= {"/" + str(p.relative_to(self.good.root)) for p in self.good.root.rglob("*") if p.is_file()}
        return sorted(paths)

    def changed(self) -> set[str]:
        out = set()
        for host in self.tracked():
            a, b = self.live.at(host), self.good.at(host)
            if (a.read_bytes() if a.is_file() else None) != (b.read_bytes() if b.is_file() else None):
                out.add(host)
        return out

    def active(self, unit: str) -> bool:
        return run(["systemctl", "is-active", "--quiet", unit], unit).returncode == 0

    def systemd(self, verb: str, unit: str = "") -> None:
        res = run(["systemctl", verb, *([unit] if unit else [])], unit or "systemd")
        if res.returncode != 0:
            raise Failed(f"{unit or 'systemd'}: systemctl {verb} failed: {one_line(res.stderr or res.stdout)}")

    def prometheus(self, changed: set[str]) -> str | None:
        p = self.live.m["prometheus"]
        rules = p["rules_dir"].rstrip("/") + "/"
        if not any(h in (p["config"], p["defaults"]) or h.startswith(rules) for h in changed):
            return None
        if not self.active(p["unit"]):
            return f"{p['unit']} is not running: the new files apply at its next start"
        verb = "restart" if p["defaults"] in changed else "reload"
        t0 = time.time()
        self.systemd(verb, p["unit"])
        self.verify(p["metrics_url"], "prometheus_config_last_reload", t0, p["config"], p["unit"])
        return f"Prometheus {verb}ed, configuration and rules in use"

    def alertmanager(self, changed: set[str]) -> str | None:
        am = self.live.m["alertmanager"]
        if not changed & {am["template"], am["renderer"], am["defaults"], am["dropin"]}:
            return None
        if am["dropin"] in changed:
            self.systemd("daemon-reload")
        if not self.active(am["unit"]):
            return f"{am['unit']} is not running: the new files apply at its next start"
        # strictly, so that a missing secret fails here and not silently in the unit's `ExecReload=-`
        res = render_alertmanager(self.live.at(am["renderer"]), self.live.at(am["template"]),
                                  self.live.at(am["config"]), am["secrets_dir"], am["group"])
        if res.returncode != 0:
            raise Failed(f"{am['template']}: {one_line(res.stderr or res.stdout)}")
        verb = "restart" if changed & {am["defaults"], am["dropin"]} else "reload"
        t0 = time.time()
        self.systemd(verb, am["unit"])
        self.verify(am["metrics_url"], "alertmanager_config_last_reload", t0, am["template"], am["unit"])
        return f"Alertmanager {verb}ed, configuration in use"

    def grafana(self, changed: set[str]) -> str | None:
        g = self.live.m["grafana"]
        prov = g["provisioning"].rstrip("/") + "/"
        if not any(h == g["ini"] or h.startswith(prov) for h in changed):
            return None
        if not self.active(g["unit"]):
            return f"{g['unit']} is not running: the new files apply at its next start"
        self.systemd("restart", g["unit"])
        return "Grafana restarted"

    def verify(self, url: str, metric: str, t0: float, host: str, unit: str) -> None:
        """Wait for a successful reload after t0 (a restart sets the same two series)."""
        deadline = time.monotonic() + self.wait
        seen = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback URL, manifest)
                    text = resp.read().decode()
                ok = scalar(text, f"{metric}_successful")
                ts = scalar(text, f"{metric}_success_timestamp_seconds")
                seen = f"{metric}_successful={ok:g}" if ok is not None else f"{metric}_successful absent"
                if ok == 1 and ts is not None and ts >= int(t0):
                    return
                if ok == 0 and time.time() - t0 > 2:
                    break
            except OSError as exc:
                seen = f"no answer ({exc})"
            time.sleep(0.5)
        raise Failed(f"{host}: {unit} did not take the new configuration ({seen}); see journalctl -u {unit}")

    def remember(self, paths: list[str]) -> None:
        for host in paths:
            src, dst = self.live.at(host), self.good.at(host)
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            else:
                dst.unlink(missing_ok=True)

    def restore(self, paths: set[str]) -> None:
        for host in sorted(paths):
            src, dst = self.good.at(host), self.live.at(host)
            if src.is_file():
                write_atomic(dst, src.read_bytes(), src.stat().st_mode & 0o7777)
            else:
                dst.unlink(missing_ok=True)

    def run(self) -> list[str]:
        first = not self.good.root.is_dir()
        changed = set(self.tracked()) if first else self.changed()
        if not changed:
            return ["configuration unchanged since the last successful reload"]
        notes: list[str] = []
        try:
            for step in (self.prometheus, self.alertmanager, self.grafana):
                note = step(changed)
                if note:
                    notes.append(note)
        except Failed as exc:
            if first:
                raise
            self.restore(changed)
            for step in (self.prometheus, self.alertmanager):  # the old files back into the services too
                with contextlib.suppress(Failed):
                    step(changed)
            raise Failed(f"{exc}; the last good files are restored and running") from None
        self.remember(sorted(changed))
        return notes


def scalar(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def load(root: Path) -> Host:
    try:
        return Host(root, json.loads((root / MANIFEST).read_text()))
    except (OSError, ValueError) as exc:
        raise Failed(f"/{MANIFEST}: cannot read the manifest: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[1])
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="check a staged bundle").add_argument("staged", type=Path)
    rl = sub.add_parser("reload", help="reload what changed since the last good configuration")
    rl.add_argument("--wait", type=float, default=RELOAD_WAIT_SECONDS, help="seconds to wait for a reload")
    args = ap.parse_args(argv)
    root = Path(os.environ.get("QP_BUNDLE_ROOT") or "/").resolve()
    try:
        if args.action == "check":
            staged = load(args.staged.resolve())
            check(staged, Host(root, staged.m))
            print(f"{PROG}: staged configuration passes promtool and amtool")
        else:
            for note in Reload(load(root), args.wait).run():
                print(f"{PROG}: {note}")
    except Failed as exc:
        print(f"{PROG}: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
