"""The vendored flag lists equal the shared reference; the secrets table matches the hosts' users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloud_init.client_flags import ACCEPTED, FORBIDDEN_FLAGS, parse_reference
from cloud_init.secrets_table import SECRET_FILES, WALLET_PASSWORD_FILE, install_secret_script, secrets_for_role

from .support import REPO_ROOT

REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "client-flags.md"


def _reference_text() -> str:
    if not REFERENCE.is_file():
        pytest.skip(f"SHARED REFERENCE MISSING: {REFERENCE} (CI copies shared/ beside the repo); "
                    "the vendored flag lists were NOT compared with it")
    return REFERENCE.read_text()


def test_vendored_flags_equal_the_reference() -> None:
    ref = parse_reference(_reference_text())
    for client in ("gzond", "gqrl", "beacon-chain", "validator"):
        missing, extra = ref[client] - ACCEPTED[client], ACCEPTED[client] - ref[client]
        assert not missing and not extra, f"{client}: reference-only {sorted(missing)}, vendored-only {sorted(extra)}"


def test_reference_parser_notices_a_change() -> None:
    text = _reference_text()
    changed = parse_reference(text.replace(" jwt-secret ", " jwt-secret-file ", 1))
    assert "jwt-secret" not in changed["beacon-chain"] and changed["beacon-chain"] != ACCEPTED["beacon-chain"]


def test_flag_sets_are_plausible() -> None:
    assert {"datadir", "http.api", "authrpc.jwtsecret", "metrics.addr", "nat"} <= ACCEPTED["gzond"]
    assert "qrlstats" in ACCEPTED["gqrl"] and "zondstats" not in ACCEPTED["gqrl"] and "unlock" not in ACCEPTED["gqrl"]
    assert {"execution-endpoint", "checkpoint-sync-url", "bootstrap-node"} <= ACCEPTED["beacon-chain"]
    assert {"wallet-dir", "enable-doppelganger", "graffiti", "keys-dir"} <= ACCEPTED["validator"]
    # forbidden flags exist in the clients (so a typo check alone would not stop them): they need their own ban
    assert ACCEPTED["validator"] >= FORBIDDEN_FLAGS


def test_secrets_table_entries() -> None:
    jwt = SECRET_FILES["jwt"]
    assert (jwt.path, jwt.mode, jwt.owner) == ("/etc/quantapool/secrets/jwt.hex", "0640", "root:qp-jwt")
    assert set(SECRET_FILES) == {"jwt", "backup-ship-key", "alertmanager-discord-webhook",
                                 "alertmanager-telegram-token", "alertmanager-pagerduty-key",
                                 "alertmanager-heartbeat-url",
                                 "grafana-admin-password", "grafana-tls-key", "grafana-tls-cert"}
    for name, s in SECRET_FILES.items():
        assert re.fullmatch(r"[a-z0-9-]+", name) and s.path.startswith("/etc/quantapool/secrets/")
        assert s.user == "root" and s.mode in ("0600", "0640", "0644")
        if s.mode == "0644":
            assert name.endswith("-cert"), "only public material may be world-readable"
    assert WALLET_PASSWORD_FILE not in {s.path for s in SECRET_FILES.values()}, "never replaceable over SSH"
    assert set(secrets_for_role("primary")) == set(secrets_for_role("backup")) == {"jwt", "backup-ship-key"}
    assert "jwt" not in secrets_for_role("monitoring")


def test_install_secret_script_lists_exactly_the_roles_secrets() -> None:
    for role in ("primary", "monitoring"):
        text = install_secret_script(role)
        listed = set(re.findall(r"^  ([a-z0-9-]+)\)$", text, flags=re.M))
        assert listed == set(secrets_for_role(role))


@pytest.mark.realtools
def test_alertmanager_group_is_debians_service_user() -> None:
    unit = Path("/lib/systemd/system/prometheus-alertmanager.service")
    if not unit.exists():
        pytest.skip("REAL TOOL MISSING: prometheus-alertmanager (apt-get install prometheus-alertmanager)")
    [user] = re.findall(r"^User=(\S+)$", unit.read_text(), flags=re.M)
    for name, s in SECRET_FILES.items():
        if name.startswith("alertmanager-"):
            assert s.group == user


def test_lab_standins_accept_every_rendered_flag() -> None:
    """The lab's stand-in clients reject unknown flags and wrong kinds (bare switch vs value) like the real
    ones: every flag a unit uses must pass them, or the lab would fail where production would too."""
    try:
        from lab.standins.flagsets import flags_for
    except ImportError as exc:  # another helper's module; this check needs it
        pytest.skip(f"lab stand-ins not importable ({exc}); cross-check did not run")
    from cloud_init import key_host as kh

    from .hf_unitparse import exec_argv, long_flags, values
    from .support import render_variant
    for profile in ("gzond", "gqrl"):
        r = render_variant(profile, "primary", True)
        for unit, binary in ((kh.EXECUTION_UNIT, profile), (kh.BEACON_UNIT, "beacon-chain"),
                             (kh.VALIDATOR_UNIT, "validator")):
            [start] = values(r.files[f"{kh.UNIT_DIR}/{unit}"], "Service", "ExecStart")
            accepted = flags_for(binary)
            for name, value in long_flags(exec_argv(start)):
                assert name in accepted, f"{binary}: --{name} unknown to the stand-in"
                assert (accepted[name] == "bool") == (value is None), f"{binary}: --{name} kind mismatch"
