"""Stand-in for qrysm ``validator``: duties, slashing protection, signing log, metrics, backups.

What matters for the project's safety model is reproduced faithfully: the DB lock (one process per
``validator.db``), check-then-record slashing protection, EIP-3076 export/import, the backup webhook, the
wallet password check and the metric names. Every signature is also appended to
``<datadir>/signing-log.jsonl`` so lab tests can prove "exactly one signer" across hosts. Attestations are
emulated (one per key per epoch); block proposals are not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from . import chain, cli, gossip, netio, runtime
from .flagsets import flags_for
from .slashing_db import DbError, SlashingDB
from .wallet import Account, WalletError, delete_accounts, import_keystores, open_wallet, read_password_file

NAME = "validator"
TERMS_MSG = ("could not confirm acceptance of terms of use: running non-interactively, pass "
             "--accept-terms-of-use to accept them")
STATUS_ACTIVE = 3
START_BALANCE = 40000.0
REWARD = 0.00001
DOPPELGANGER_EPOCHS = 2


def signing_root(gvr: str, pubkey: str, slot: int, source: int, target: int) -> str:
    """Deterministic stand-in for the attestation signing root (changes with slot, source and target)."""
    msg = bytes.fromhex(gvr[2:]) + bytes.fromhex(pubkey[2:]) + b"".join(
        n.to_bytes(8, "little") for n in (slot, source, target))
    return "0x" + hashlib.sha256(msg).hexdigest()


#: go-grpc-prometheus labels of qrysm's block stream from its beacon node (validator.go ReceiveBlocks)
BLOCK_STREAM = {"grpc_type": "server_stream", "grpc_service": "theqrl.zond.v1alpha1.BeaconNodeValidator",
                "grpc_method": "StreamBlocksAltair"}


@dataclass
class Metrics:
    """Per-key metric values, exported as qrysm does (cloud_init/monitoring/metrics_catalogue.yml).

    Label ``pubkey`` = 0x + full key. Like qrysm's CounterVecs/GaugeVecs, a per-key series exists only once it
    was first set or incremented: no counter is pre-initialised, and validator_statuses appears only once the
    beacon node answered. qrysm's validator_*_rejected_total counters are never incremented, so they are not
    exported here either; a slashing-protection refusal counts in validator_failed_attestations.
    """

    keys: list[str]
    per_key: bool
    balance: dict[str, float] = field(default_factory=dict)
    last_slot: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: grpc_client_msg_received_total of the block stream (not per key: exported even without account metrics)
    blocks_received: int | None = None

    COUNTERS = ("validator_successful_attestations", "validator_failed_attestations",
                "validator_successful_proposals", "validator_failed_proposals")

    def __post_init__(self) -> None:
        for name in self.COUNTERS:
            self.counters[name] = {}

    def inc(self, name: str, pubkey: str) -> None:
        self.counters[name][pubkey] = self.counters[name].get(pubkey, 0) + 1

    def beacon_reached(self) -> None:
        """qrysm sets every loaded key's status once its beacon node answers (checkAndLogValidatorStatus)."""
        for k in self.keys:
            self.statuses.setdefault(k, STATUS_ACTIVE)
            self.balance.setdefault(k, START_BALANCE)

    def block_received(self) -> None:
        self.blocks_received = (self.blocks_received or 0) + 1

    def render(self) -> netio.Response:
        fams = []
        if self.blocks_received is not None:
            fams.append(netio.Metric("grpc_client_msg_received_total", "counter",
                                     "Total number of RPC stream messages received by the client.",
                                     [(dict(BLOCK_STREAM), self.blocks_received)]))
        if self.per_key:
            fams += [
                netio.Metric("validator_statuses", "gauge", "validator statuses: 0 UNKNOWN, 1 DEPOSITED, 2 PENDING, "
                             "3 ACTIVE, 4 EXITING, 5 SLASHING, 6 EXITED",
                             [({"pubkey": k}, v) for k, v in self.statuses.items()]),
                netio.Metric("validator_balance", "gauge", "current validator balance.",
                             [({"pubkey": k}, v) for k, v in self.balance.items()]),
                netio.Metric("validator_last_attested_slot", "gauge", "Last attested slot.",
                             [({"pubkey": k}, v) for k, v in self.last_slot.items()]),
            ]
            for name in self.COUNTERS:
                fams.append(netio.Metric(name, "counter", name,
                                         [({"pubkey": k}, v) for k, v in self.counters[name].items()]))
        return netio.render_metrics([f for f in fams if f.samples])


@dataclass
class Validator:
    """Duty loop state of one running validator client."""

    accounts: list[Account]
    db: SlashingDB
    clock: chain.Clock
    gvr: str
    prefix: str
    grpc: tuple[str, int]
    rest_url: str
    signing_log: Path
    metrics: Metrics
    backup_dir: Path | None
    ready_once: bool = False
    hostname: str = field(default_factory=socket.gethostname)

    def ready(self) -> tuple[bool, str]:
        """Duties run only while the beacon's gRPC port answers and its REST API says synced."""
        if not netio.tcp_answers(*self.grpc, timeout=0.5):
            return False, f"beacon node gRPC {self.grpc[0]}:{self.grpc[1]} does not answer"
        try:
            status, body = netio.http_call(f"{self.rest_url}{self.prefix}/v1/node/syncing", timeout=0.8)
            if status != 200 or not isinstance(body, dict):
                return False, f"beacon REST answered HTTP {status}"
            if body.get("data", {}).get("is_syncing", True):
                return False, "beacon node is syncing"
            if not self.ready_once:
                status, genesis = netio.http_call(f"{self.rest_url}{self.prefix}/v1/beacon/genesis", timeout=0.8)
                root = (genesis or {}).get("data", {}).get("genesis_validators_root") if status == 200 else None
                if root != self.gvr:
                    return False, f"beacon node is on another network (genesis validators root {root})"
        except OSError as exc:
            return False, f"beacon REST {self.rest_url} unreachable: {exc}"
        return True, ""

    def on_slot(self, slot: int) -> None:
        spe = self.clock.slots_per_epoch
        duties = [a for a in self.accounts if a.index % spe == slot % spe]
        if not self.accounts:
            return  # qrysm waits for keystores before it talks to the beacon node (wait_for_activation.go)
        ok, reason = self.ready()
        if ok and not self.ready_once:
            self.ready_once = True
            self.metrics.beacon_reached()
            runtime.log(NAME, "info", "Beacon node is synced, starting validator duties", slot=slot)
        if ok:
            self.metrics.block_received()  # the beacon streams the slot's block (StreamBlocksAltair)
        if not duties:
            if not ok and not self.ready_once:
                runtime.log(NAME, "info", "Waiting for beacon node to sync", reason=reason)
            return
        for account in duties:
            if ok:
                self.attest(account, slot)
            elif self.ready_once:
                self.metrics.inc("validator_failed_attestations", account.pubkey)
                runtime.log(NAME, "error", "Could not submit attestation", slot=slot, reason=reason,
                            pubkey=account.pubkey[:14])

    def attest(self, account: Account, slot: int) -> None:
        """Check and record in the DB first, then write the signing log; refuse slashable votes."""
        target = self.clock.epoch_of(slot)
        source = max(0, target - 1)
        root = signing_root(self.gvr, account.pubkey, slot, source, target)
        try:
            refusal = self.db.sign_attestation(account.pubkey, source, target, root)
        except Exception as exc:  # a DB failure must never turn into an unprotected signature
            self.metrics.inc("validator_failed_attestations", account.pubkey)
            runtime.log(NAME, "error", "Could not record attestation in slashing protection DB", error=repr(exc))
            return
        if refusal is not None:
            # qrysm (attest_protect.go) counts a double or surround vote in validator_failed_attestations;
            # its earlier "below the lowest signed source/target epoch" refusals return without counting.
            if refusal.startswith(("double vote", "surround vote")):
                self.metrics.inc("validator_failed_attestations", account.pubkey)
            runtime.log(NAME, "error", "Attempted to make slashable attestation, rejected by local slashing "
                        "protection", slot=slot, source_epoch=source, target_epoch=target,
                        pubkey=account.pubkey[:14], reason=refusal)
            return
        line = json.dumps({
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "host": self.hostname, "pubkey": account.pubkey, "duty": "attestation", "slot": slot,
            "source_epoch": source, "target_epoch": target, "signing_root": root,
        })
        with open(self.signing_log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        failed = gossip.publish(line, self.hostname)  # the network sees the vote (every beacon's liveness)
        if failed:
            runtime.log(NAME, "warn", "Could not publish attestation to the lab gossip directory", error=failed)
        self.metrics.inc("validator_successful_attestations", account.pubkey)
        self.metrics.last_slot[account.pubkey] = slot
        self.metrics.balance[account.pubkey] += REWARD
        runtime.log(NAME, "info", "Submitted new attestations", slot=slot, source_epoch=source,
                    target_epoch=target, pubkey=account.pubkey[:14])

    def monitoring(self, req: netio.Request) -> netio.Response:
        if req.path == "/metrics":
            return self.metrics.render()
        if req.path == "/healthz":
            return netio.Response(200, b"*validator.ValidatorClient: OK\n", "text/plain")
        if req.path == "/db/backup" and self.backup_dir is not None and req.method in ("GET", "POST"):
            try:
                dest = self.db.backup(self.backup_dir)
            except Exception as exc:
                runtime.log(NAME, "error", "Could not back up validator database", error=repr(exc))
                return netio.Response(500, f"backup failed: {exc}\n".encode(), "text/plain")
            runtime.log(NAME, "info", "Writing backup database", backup=str(dest))
            return netio.Response(200, f"{dest}\n".encode(), "text/plain")
        return netio.Response(404, b"404 page not found\n", "text/plain")


def doppelganger_check(db: SlashingDB, accounts: list[Account], clock: chain.Clock) -> None:
    """qrysm's one-shot start check: keys with an attestation in the last 2 epochs are skipped.

    There is no network liveness source in the lab, so non-skipped keys are reported as "not seen live".
    """
    epoch = clock.epoch_of(clock.current_slot())
    skipped, checked = [], []
    for account in accounts:
        last = db.last_target_epoch(account.pubkey)
        (skipped if last is not None and epoch - last <= DOPPELGANGER_EPOCHS else checked).append(account.pubkey)
    runtime.log(NAME, "info", "Doppelganger check ran (stand-in: no network liveness source)",
                checked=len(checked), skipped=len(skipped),
                skipped_keys=",".join(k[:14] for k in skipped) or "none")


def _need(args: cli.Parsed, name: str) -> str:
    value = args.get(name)
    if not value:
        raise cli.UsageError(f"--{name} is required when running non-interactively")
    return value


def _gvr() -> str:
    return chain.genesis_validators_root(chain.Clock.from_env().genesis_time)


def _cmd_accounts_import(args: cli.Parsed) -> int:
    wallet_dir = Path(_need(args, "wallet-dir")).expanduser()
    keys_dir = Path(_need(args, "keys-dir")).expanduser()
    wallet_pw = read_password_file(Path(_need(args, "wallet-password-file")), "wallet-password-file")
    account_pw = read_password_file(Path(_need(args, "account-password-file")), "account-password-file")
    added = import_keystores(wallet_dir, wallet_pw, keys_dir, account_pw)
    runtime.log(NAME, "info", f"Imported {added} new accounts into the wallet", wallet_dir=str(wallet_dir))
    return 0


def _hex(pubkey: str) -> str:
    return pubkey.lower() if pubkey.lower().startswith("0x") else "0x" + pubkey.lower()


def _cmd_accounts_list(args: cli.Parsed) -> int:
    """qrysm's local-keymanager listing (ListKeymanagerAccounts), colours included: qrysm always prints them."""
    wallet_dir = Path(_need(args, "wallet-dir")).expanduser()
    wallet_pw = read_password_file(Path(_need(args, "wallet-password-file")), "wallet-password-file")
    accounts = open_wallet(wallet_dir, wallet_pw)
    print("(keymanager kind) \x1b[1;92mlocal wallet\x1b[0m\n")
    print(f"Showing \x1b[93m{len(accounts)}\x1b[0m validator account{'' if len(accounts) == 1 else 's'}")
    print("\x1b[91mView the zond deposit transaction data for your accounts by running "
          "`validator accounts list --show-deposit-data`\x1b[0m")
    for i, account in enumerate(accounts):
        print(f"\n\x1b[1;94mAccount {i}\x1b[0m | \x1b[1;92maccount-{i}\x1b[0m")
        print(f"\x1b[1;95m[validating public key]\x1b[0m {_hex(account.pubkey)}")
    print("")
    return 0


def _cmd_accounts_delete(args: cli.Parsed) -> int:
    wallet_dir = Path(_need(args, "wallet-dir")).expanduser()
    wallet_pw = read_password_file(Path(_need(args, "wallet-password-file")), "wallet-password-file")
    keys = [k.strip() for k in _need(args, "delete-public-keys").split(",") if k.strip()]
    removed = delete_accounts(wallet_dir, wallet_pw, keys)
    runtime.log(NAME, "info", f"Successfully deleted {removed} accounts", wallet_dir=str(wallet_dir))
    return 0


def _cmd_export(args: cli.Parsed) -> int:
    datadir = Path(_need(args, "datadir")).expanduser()
    out_dir = Path(_need(args, "slashing-protection-export-dir")).expanduser()
    with SlashingDB(datadir, _gvr()) as db:
        if not db.existed:
            raise DbError(f"no slashing protection data found in {datadir}: an empty validator.db was created; "
                          "point --datadir at the directory holding validator.db")
        doc = db.export()
    runtime.ensure_dir(out_dir)
    runtime.atomic_write(out_dir / "slashing_protection.json", json.dumps(doc, indent=2).encode())
    runtime.log(NAME, "info", "Exported slashing protection history", keys=len(doc["data"]),
                file=str(out_dir / "slashing_protection.json"))
    return 0


def _cmd_import(args: cli.Parsed) -> int:
    datadir = Path(_need(args, "datadir")).expanduser()
    src = Path(_need(args, "slashing-protection-json-file")).expanduser()
    try:
        doc = json.loads(src.read_text())
    except OSError as exc:
        raise DbError(f"could not read --slashing-protection-json-file {src}: {exc.strerror}") from None
    except ValueError as exc:
        raise DbError(f"--slashing-protection-json-file {src} is not valid JSON ({exc})") from None
    with SlashingDB(datadir, _gvr()) as db:
        atts, blocks = db.import_interchange(doc)
    runtime.log(NAME, "info", "Imported slashing protection history", attestations_added=atts,
                blocks_added=blocks)
    return 0


def _run(args: cli.Parsed) -> int:
    if args.flag("clear-db") or args.flag("force-clear-db"):
        raise cli.UsageError("--clear-db/--force-clear-db refused in stand-in: they delete slashing protection")
    runtime.install_signal_handlers(NAME)
    clock = chain.Clock.from_env()
    profile = chain.profile_from_env()
    wallet_dir = Path(args.get("wallet-dir") or str(Path.home() / ".eth2validators" / "prysm-wallet-v2"))
    password = read_password_file(Path(_need(args, "wallet-password-file")), "wallet-password-file")
    accounts = open_wallet(wallet_dir.expanduser(), password)
    if not accounts:
        # qrysm keeps running (metrics served, no duties) and polls for keys; the stand-in reads keys at
        # start only, so it waits until stopped.
        runtime.log(NAME, "warn", "No validating keys fetched. Waiting for keystores to be imported",
                    wallet_dir=str(wallet_dir))
    datadir = Path(args.get("datadir") or str(wallet_dir / "direct")).expanduser()
    grpc = netio.split_hostport(args.get("beacon-rpc-provider", "127.0.0.1:4000") or "127.0.0.1:4000", 4000)
    rest_url = (args.get("beacon-rest-api-provider") or f"http://{grpc[0]}:3500").rstrip("/")
    gvr = chain.genesis_validators_root(clock.genesis_time)
    backup_dir = None
    if args.flag("enable-db-backup-webhook"):
        backup_dir = Path(args.get("db-backup-output-dir") or str(datadir / "backups")).expanduser()
    db = SlashingDB(datadir, gvr)
    try:
        if args.flag("enable-doppelganger"):
            doppelganger_check(db, accounts, clock)
        val = Validator(accounts=accounts, db=db, clock=clock, gvr=gvr, prefix=chain.rest_prefix(profile),
                        grpc=grpc, rest_url=rest_url, signing_log=datadir / "signing-log.jsonl",
                        metrics=Metrics([a.pubkey for a in accounts], not args.flag("disable-account-metrics")),
                        backup_dir=backup_dir)
        servers = []
        if not args.flag("disable-monitoring"):
            servers.append(netio.start_http(args.get("monitoring-host", "127.0.0.1") or "127.0.0.1",
                                            args.get_int("monitoring-port", 8081), val.monitoring,
                                            f"{NAME}/monitoring"))
        runtime.log(NAME, "info", "Started stand-in validator client", keys=len(accounts), datadir=str(datadir),
                    beacon=f"{grpc[0]}:{grpc[1]}", rest=rest_url)
        last_slot = None
        while not runtime.STOP.is_set():
            slot = clock.current_slot()
            if slot != last_slot:
                last_slot = slot
                val.on_slot(slot)
            runtime.wait_stop(min(0.5, clock.seconds_to_next_slot() + 0.01))
        netio.stop_servers(servers)
    finally:
        db.close()
    runtime.log(NAME, "info", "Stopped")
    return 0


def main(argv: list[str], client: str = NAME) -> int:
    """Entry point of the validator stand-in; returns the process exit code."""
    try:
        args = cli.parse(argv, flags_for(NAME))
        if args.help:
            print(f"{NAME} (QuantaPool lab stand-in) [accounts import|list|delete | slashing-protection-history "
                  "export|import] flags: " + " ".join(f"--{n}" for n in sorted(flags_for(NAME))))
            return 0
        if args.version:
            print(f"{runtime.with_release('Qrysm/v0.1.0-qpstandin')} validator")
            return 0
        if not args.flag("accept-terms-of-use"):
            raise cli.UsageError(TERMS_MSG)
        command = args.positional
        if not command:
            return _run(args)
        if command == ["accounts", "import"]:
            return _cmd_accounts_import(args)
        if command == ["accounts", "list"]:
            return _cmd_accounts_list(args)
        if command == ["accounts", "delete"]:
            return _cmd_accounts_delete(args)
        if command == ["slashing-protection-history", "export"]:
            return _cmd_export(args)
        if command == ["slashing-protection-history", "import"]:
            return _cmd_import(args)
        raise cli.UsageError(f"command {' '.join(command)!r} is not emulated by the validator stand-in")
    except (cli.UsageError, chain.ConfigError, WalletError, DbError, netio.BindError, ValueError, OSError) as exc:
        return cli.usage_exit(str(exc))
