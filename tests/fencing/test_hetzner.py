"""qpool.hetzner with the real hcloud client against the fake API: client setup, discovery, labels."""

from __future__ import annotations

import pytest

from qpool.errors import QpoolError
from qpool.hetzner import (
    HetznerError,
    ServerInfo,
    backoff_delays,
    find_stack_servers,
    get_server,
    make_client,
    set_labels,
)


def _add_pairs(fake, env: str, pairs: int) -> dict[tuple[str, str], int]:
    ids = {}
    for n in range(pairs):
        for role in ("primary", "backup"):
            ids[(f"p{n}", role)] = fake.add_server(
                f"qp-{env}-p{n}-{role}",
                {"app": "quantapool", "env": env, "pair": f"p{n}", "role": role},
                f"198.51.{n // 200}.{(n % 200) + (1 if role == 'primary' else 50)}",
                f"10.{n // 200}.{n % 200}.{2 if role == 'primary' else 3}",
            )
    return ids


def test_missing_token_says_to_export_it(monkeypatch):
    monkeypatch.delenv("HCLOUD_FENCING_TOKEN", raising=False)
    with pytest.raises(HetznerError) as info:
        make_client()
    message = str(info.value)
    assert "export HCLOUD_FENCING_TOKEN" in message
    assert "\n" not in message
    assert isinstance(info.value, QpoolError)


def test_the_providers_token_is_never_used_for_fencing(monkeypatch):
    """HCLOUD_TOKEN is the hcloud provider's (deploy) token: qpool refuses to fall back to it (issue 13)."""
    monkeypatch.delenv("HCLOUD_FENCING_TOKEN", raising=False)
    monkeypatch.setenv("HCLOUD_TOKEN", "the-providers-token")
    with pytest.raises(HetznerError) as info:
        make_client()
    message = str(info.value)
    assert "export HCLOUD_FENCING_TOKEN" in message and "HCLOUD_TOKEN, the provider's token, is never used" in message
    assert "the-providers-token" not in message


def test_blank_token_is_missing(monkeypatch):
    monkeypatch.setenv("HCLOUD_FENCING_TOKEN", "   ")
    with pytest.raises(HetznerError, match="export HCLOUD_FENCING_TOKEN"):
        make_client()


def test_token_and_endpoint_from_environment(fake, primary, token, monkeypatch):
    monkeypatch.setenv("HCLOUD_FENCING_TOKEN", token)
    monkeypatch.setenv("QPOOL_HCLOUD_ENDPOINT", fake.endpoint)
    info = get_server(make_client(), primary)
    assert info.id == primary
    assert all(r.authorized for r in fake.requests)


def test_argument_token_wins_over_environment(fake, primary, token, monkeypatch):
    monkeypatch.setenv("HCLOUD_FENCING_TOKEN", "stale-token")
    assert get_server(make_client(token, fake.endpoint), primary).id == primary


def test_server_info_fields(client, primary):
    info = get_server(client, primary)
    assert info == ServerInfo(
        id=primary,
        name="qp-testnet-p1-primary",
        status="running",
        labels={"app": "quantapool", "env": "testnet", "pair": "p1", "role": "primary"},
        public_ipv4="203.0.113.10",
        private_ips=("10.10.0.2",),
    )


def test_server_without_networks(fake, client):
    sid = fake.add_server("bare", {"app": "quantapool"})
    info = get_server(client, sid)
    assert info.public_ipv4 is None
    assert info.private_ips == ()


def test_find_follows_pagination_beyond_one_page(fake, client):
    ids = _add_pairs(fake, "testnet", 40)  # 80 matching servers: 2 pages of 50
    _add_pairs(fake, "mainnet", 15)  # 30 that must not match
    fake.clear_log()

    found = find_stack_servers(client, app="quantapool", env="testnet")

    assert sorted(s.id for s in found) == sorted(ids.values())
    assert all(s.labels["env"] == "testnet" for s in found)
    pages = [r.query.get("page") for r in fake.requests if r.path == "/v1/servers"]
    assert pages == [["1"], ["2"]]
    assert [s.name for s in found] == sorted(s.name for s in found)


def test_find_filters_by_role_and_pair(fake, client):
    ids = _add_pairs(fake, "testnet", 30)
    _add_pairs(fake, "mainnet", 30)
    fake.add_server("qp-testnet-monitoring", {"app": "quantapool", "env": "testnet", "role": "monitoring"})

    primaries = find_stack_servers(client, app="quantapool", env="testnet", role="primary")
    assert sorted(s.id for s in primaries) == sorted(v for (_, role), v in ids.items() if role == "primary")

    pair = find_stack_servers(client, app="quantapool", env="testnet", pair="p7")
    assert {s.labels["role"] for s in pair} == {"primary", "backup"}
    assert {s.id for s in pair} == {ids[("p7", "primary")], ids[("p7", "backup")]}

    one = find_stack_servers(client, app="quantapool", env="testnet", pair="p7", role="backup")
    assert [s.id for s in one] == [ids[("p7", "backup")]]
    assert one[0].private_ips == ("10.0.7.3",)

    assert find_stack_servers(client, app="quantapool", env="staging") == []


def test_find_rejects_selector_injection(fake, client):
    with pytest.raises(HetznerError, match="invalid label value"):
        find_stack_servers(client, app="quantapool", env="testnet,role!=primary")
    assert fake.requests == []


def test_find_with_wrong_token_is_one_clear_line(fake):
    bad = make_client("wrong", fake.endpoint, timeout=(2.0, 5.0))
    with pytest.raises(HetznerError) as info:
        find_stack_servers(bad, app="quantapool", env="testnet")
    assert "unauthorized" in str(info.value)
    assert "HCLOUD_FENCING_TOKEN" in str(info.value)
    assert info.value.code == "unauthorized"
    assert len(fake.requests) == 1


def test_find_retries_rate_limit(fake, client, fake_time):
    _add_pairs(fake, "testnet", 2)
    fake.rate_limit(count=2, path="^/v1/servers$")
    found = find_stack_servers(client, app="quantapool", env="testnet", sleep=fake_time.sleep)
    assert len(found) == 4
    assert fake_time.sleeps == [0.5, 1.0]


def test_set_labels_merges_and_never_drops(fake, client, primary):
    fake_before = fake.server_labels(primary)
    info = set_labels(client, primary, {"qpool-note": "x1"})
    info = set_labels(client, primary, {"qpool-fenced": "true", "role": "primary"})
    expected = {**fake_before, "qpool-note": "x1", "qpool-fenced": "true"}
    assert fake.server_labels(primary) == expected
    assert info.labels == expected
    put = [r for r in fake.requests if r.method == "PUT"][-1]
    assert put.body == {"labels": expected}


def test_set_labels_rejects_invalid_values_before_any_request(fake, client, primary):
    fake.clear_log()
    with pytest.raises(HetznerError, match="invalid label value"):
        set_labels(client, primary, {"qpool-fenced-reason": "primary unreachable!"})
    assert fake.requests == []
    assert "qpool-fenced-reason" not in fake.server_labels(primary)


def test_set_labels_on_unknown_server(client):
    with pytest.raises(HetznerError, match=r"server 31337.*not_found"):
        set_labels(client, 31337, {"a": "b"})


def test_library_retry_is_disabled_so_ours_is_the_only_one(fake, client, primary, fake_time):
    # A 502 without JSON is retried by hcloud itself (real sleeps) unless make_client disabled it.
    fake.inject_error(502, "bad_gateway", count=1, path=rf"^/v1/servers/{primary}$", body="html")
    info = get_server(client, primary, sleep=fake_time.sleep)
    assert info.id == primary
    assert fake_time.sleeps == [0.5]


def test_backoff_is_bounded_and_capped():
    assert backoff_delays(6, 0.5, 8.0) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_delays(8, 1.0, 4.0) == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff_delays(1, 1.0, 4.0) == []
