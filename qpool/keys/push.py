"""`qpool keys push`: deliver validator keys to a pair's LOCKED key hosts over the pinned SSH connection.

The alternative to delivery by `pulumi up` (issue 13): the stack then holds no key material at all (no
`validatorKeys`, no passphrase), so neither Pulumi state, a checkpoint, a preview nor CI ever sees a
keystore. The sealed bundle is opened here, on the operator's machine, and only each pair's keystores and
their password are streamed to that pair's two key hosts into the same `qp-import-keys` the bootstrap uses
(which itself refuses unless the host is locked and its validator inactive).

All-or-nothing where it can be: the bundle is opened and every target host is checked (reachable with its
pinned key, validator stopped and LOCKED, no other operation running) before the first byte of key material
leaves this machine. Importing is idempotent (present keys are skipped), so a push interrupted between two
hosts is finished by running it again. Nothing here starts, unlocks or enables a validator.
"""

from __future__ import annotations

import base64
from typing import Any

from cloud_init.key_host import IMPORT_KEYS
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.keys.errors import SealError
from qpool.keys.host_bundle import host_key_tars_b64
from qpool.signing import stopped_reasons


def _open(bundle: bytes, passphrase: str, all_pairs: list[str], pairs: list[str]) -> dict[str, bytes]:
    """pair -> tar of its keys; a wrong passphrase or a bad bundle changes nothing anywhere."""
    try:
        tars = host_key_tars_b64(base64.b64encode(bundle).decode(), passphrase, all_pairs)
    except SealError as exc:
        raise QpoolError(f"cannot open the key bundle: {exc}; nothing was sent") from None
    return {pair: base64.b64decode(tars[pair]) for pair in pairs}


def push_keys(ctx: Any, bundle: bytes, passphrase: str, pairs: list[str]) -> dict[str, Any]:
    """Import each pair's keys on both of its key hosts; every host checked first; returns what was done."""
    say = ctx.report
    inv = ctx.inventory
    unknown = sorted(set(pairs) - set(inv.pairs()))
    if unknown:
        raise QpoolError(f"stack {inv.stack} has no pair {', '.join(unknown)}; pairs: {', '.join(inv.pairs())}")
    tars = _open(bundle, passphrase, inv.pairs(), pairs)
    targets: list[tuple[str, HostRecord]] = [(pair, host) for pair in pairs for host in inv.pair_hosts(pair)]
    run_id = f"keys-push-{int(ctx.clock())}"
    locked: list[HostRecord] = []
    done: list[str] = []
    try:
        for _pair, host in targets:
            ctx.ssh.ctl(host, "oplock", "acquire", "--run-id", run_id, "--owner", "qpool keys push")
            locked.append(host)
            reasons = stopped_reasons(ctx.ssh.status(host))
            if reasons:
                raise QpoolError(f"refusing: {host.name}'s validator is not stopped and LOCKED "
                                 f"({'; '.join(reasons)}); keys are pushed only to locked hosts (nothing was sent)")
        say(f"keys push: {len(targets)} host(s) locked and stopped; importing")
        for pair, host in targets:
            res = ctx.ssh.run(host, f"sudo {IMPORT_KEYS}", input=tars[pair], timeout=600)
            if res.rc != 0:
                why = res.stderr.decode(errors="replace").strip().splitlines()
                raise QpoolError(f"{host.name}: key import refused or failed ({why[-1] if why else f'rc {res.rc}'});"
                                 f" imported so far: {', '.join(done) or 'none'}; re-run `qpool keys push` once "
                                 "fixed (present keys are skipped)")
            lines = res.stdout.decode(errors="replace").strip().splitlines()
            say(f"  {host.name}: {lines[-1] if lines else 'imported'}")
            if stopped_reasons(ctx.ssh.status(host)):
                raise QpoolError(f"{host.name}: no longer stopped and LOCKED after the import; investigate now "
                                 "(qpool status)")
            done.append(host.name)
    finally:
        for host in locked:
            try:
                ctx.ssh.ctl(host, "oplock", "release", "--run-id", run_id)
            except QpoolError as exc:
                say(f"warning: could not release the operation lock on {host.name}: {exc}")
    say(f"done: keys of {', '.join(pairs)} on {', '.join(done)}; validators still LOCKED (start only with "
        "`qpool activate` or `qpool failover`)")
    return {"pairs": pairs, "hosts": done}
