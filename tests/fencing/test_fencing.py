"""fence_server with the real hcloud client against the fake API: outcomes, faults and retries."""

from __future__ import annotations

import logging

import pytest

from lab.fake_hcloud import InMemoryPower
from qpool.errors import QpoolError
from qpool.fencing import FenceError, fence_server, is_fenced, verify_off
from qpool.hetzner import ServerInfo, make_client


def _fence(client, server_id, fake_time, **kwargs):
    return fence_server(
        client, server_id, reason="primary unreachable (test)",
        clock=fake_time.clock, sleep=fake_time.sleep, wall_clock=fake_time.wall_clock, **kwargs,
    )


def _posts(fake, server_id, verb):
    return [r for r in fake.requests if r.method == "POST" and r.path == f"/v1/servers/{server_id}/actions/{verb}"]


def test_clean_fence_powers_off_hard_verifies_and_labels(fake, client, primary, fake_time, fenced_labels):
    result = _fence(client, primary, fake_time)

    assert result.server_id == primary
    assert result.name == "qp-testnet-p1-primary"
    assert result.already_off is False
    assert result.fenced_at == fake_time.wall_clock()
    assert result.polls >= 1
    assert fake.backend(primary).is_running() is False
    assert fake.server_status(primary) == "off"
    assert len(_posts(fake, primary, "poweroff")) == 1
    assert _posts(fake, primary, "shutdown") == []
    assert fenced_labels(primary) == {"qpool-fenced": "true", "qpool-fenced-at": str(int(result.fenced_at))}


def test_fence_keeps_existing_labels(fake, client, primary, fake_time):
    before = fake.server_labels(primary)
    _fence(client, primary, fake_time)
    after = fake.server_labels(primary)
    assert {k: after[k] for k in before} == before
    assert set(after) == set(before) | {"qpool-fenced", "qpool-fenced-at"}


def test_already_off_still_gets_the_power_off_and_is_verified_and_labelled(fake, client, fake_time, fenced_labels):
    """Issue 12: an "off" reading is never trusted alone: the hard power-off is sent anyway."""
    sid = fake.add_server("qp-off", {"app": "quantapool"}, None, None, InMemoryPower(running=False))
    result = _fence(client, sid, fake_time)

    assert result.already_off is True
    assert len(_posts(fake, sid, "poweroff")) == 1
    assert fenced_labels(sid)["qpool-fenced"] == "true"
    status_reads = [r for r in fake.requests if r.method == "GET" and r.path == f"/v1/servers/{sid}"]
    assert len(status_reads) >= 2  # the initial read and the verification


def test_slow_action_still_succeeds_within_timeout(fake, client, primary, fake_time, fenced_labels):
    fake.set_action_latency(primary, polls=4)
    result = _fence(client, primary, fake_time, poll_interval=2.0, action_timeout=120)

    action_polls = [r for r in fake.requests if r.path.startswith("/v1/servers/actions/")]
    assert len(action_polls) == 5  # running x4, then success
    assert result.polls == len(action_polls) + 1  # plus the server status read that saw "off"
    assert fake_time.sleeps[:4] == [2.0, 2.0, 2.0, 2.0]
    assert fenced_labels(primary)["qpool-fenced"] == "true"


def test_action_latency_in_real_seconds_is_waited_out(fake, client, primary):
    fake.set_action_latency(primary, seconds=0.3)
    result = fence_server(
        client, primary, reason="test", poll_interval=0.05, action_timeout=10, off_timeout=10
    )
    assert result.polls >= 2
    assert fake.server_status(primary) == "off"


def test_action_that_never_finishes_times_out_without_label(fake, client, primary, fake_time, fenced_labels):
    fake.set_action_latency(primary, polls=10_000)
    with pytest.raises(FenceError, match=r"qp-testnet-p1-primary .*still running after 10s"):
        _fence(client, primary, fake_time, action_timeout=10, poll_interval=2.0)
    assert fenced_labels(primary) == {}
    assert len([r for r in fake.requests if r.path.startswith("/v1/servers/actions/")]) <= 6


def test_action_error_raises_with_its_message_and_no_label(fake, client, primary, fake_time, fenced_labels):
    fake.fail_next_action(primary, code="action_failed", message="hypervisor unreachable")
    with pytest.raises(FenceError, match="hypervisor unreachable") as info:
        _fence(client, primary, fake_time)
    assert "qp-testnet-p1-primary" in str(info.value)
    assert "action_failed" in str(info.value)
    assert fenced_labels(primary) == {}
    assert fake.backend(primary).is_running() is True


def test_server_never_off_raises_naming_server_and_status_and_no_label(
    fake, client, primary, fake_time, fenced_labels
):
    fake.never_off(primary, status="stopping")
    with pytest.raises(FenceError) as info:
        _fence(client, primary, fake_time, off_timeout=30, poll_interval=2.0)
    message = str(info.value)
    assert "qp-testnet-p1-primary" in message
    assert str(primary) in message
    assert "'stopping'" in message
    assert fenced_labels(primary) == {}
    assert not any(r.method == "PUT" for r in fake.requests)
    server_reads = [r for r in fake.requests if r.method == "GET" and r.path == f"/v1/servers/{primary}"]
    assert len(server_reads) <= 1 + 30 / 2.0 + 2  # bounded by off_timeout / poll_interval


def test_server_reaching_off_late_is_accepted(fake, client, primary, fake_time, fenced_labels):
    fake.set_off_delay(primary, polls=3)
    result = _fence(client, primary, fake_time, poll_interval=1.0)
    assert result.polls >= 4
    assert fenced_labels(primary)["qpool-fenced"] == "true"


@pytest.mark.parametrize(
    ("status", "code", "body"),
    [
        (503, "unavailable", "json"),
        (500, "server_error", "json"),
        (502, "bad_gateway", "html"),
        (429, "rate_limit_exceeded", "json"),
        (423, "locked", "json"),
    ],
)
def test_transient_errors_on_power_off_are_retried_with_backoff(
    fake, client, primary, fake_time, fenced_labels, status, code, body
):
    fake.inject_error(status, code, count=2, path="/actions/poweroff$", body=body)
    result = _fence(client, primary, fake_time)

    posts = _posts(fake, primary, "poweroff")
    assert [p.status for p in posts] == [status, status, 201]
    assert fake_time.sleeps[:2] == [0.5, 1.0]  # our bounded backoff, through the injected sleep
    assert result.server_id == primary
    assert fake.actions(primary)[0]["command"] == "stop_server"
    assert len(fake.actions(primary)) == 1
    assert fenced_labels(primary)["qpool-fenced"] == "true"


def test_rate_limit_while_polling_is_retried(fake, client, primary, fake_time, fenced_labels):
    fake.set_action_latency(primary, polls=1)
    fake.rate_limit(count=3, path=r"^/v1/servers/actions/")
    _fence(client, primary, fake_time)
    assert [r.status for r in fake.requests if r.path.startswith("/v1/servers/actions/")][:3] == [429] * 3
    assert fenced_labels(primary)["qpool-fenced"] == "true"


def test_dropped_connection_is_retried(fake, client, primary, fake_time, fenced_labels):
    fake.drop_connections(count=1, server_id=primary, path="/actions/poweroff$")
    _fence(client, primary, fake_time)
    assert fake_time.sleeps[0] == 0.5
    assert fake.backend(primary).is_running() is False
    assert fenced_labels(primary)["qpool-fenced"] == "true"


def test_persistent_5xx_gives_up_after_bounded_retries(fake, client, primary, fake_time, fenced_labels):
    fake.inject_error(503, "unavailable", count=1000, path="/actions/poweroff$")
    with pytest.raises(FenceError, match=r"qp-testnet-p1-primary.*still failing after 6 attempts.*unavailable"):
        _fence(client, primary, fake_time)
    assert len(_posts(fake, primary, "poweroff")) == 6
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert fake.backend(primary).is_running() is True
    assert fenced_labels(primary) == {}


def test_unauthorized_fails_immediately_with_clear_message(fake, primary, fake_time, token):
    bad = make_client("wrong-token", fake.endpoint, timeout=(2.0, 5.0))
    with pytest.raises(FenceError) as info:
        _fence(bad, primary, fake_time)
    message = str(info.value)
    assert "unauthorized" in message
    assert str(primary) in message
    assert "HCLOUD_FENCING_TOKEN" in message
    assert "wrong-token" not in message and token not in message
    assert "\n" not in message
    assert fake_time.sleeps == []
    assert len(fake.requests) == 1
    assert fake.backend(primary).is_running() is True


def test_unknown_server_fails_immediately_with_not_found(fake, client, fake_time):
    with pytest.raises(FenceError, match=r"server 999\b.*not_found"):
        _fence(client, 999, fake_time)
    assert fake_time.sleeps == []
    assert len(fake.requests) == 1


def test_forbidden_on_power_off_fails_immediately(fake, client, primary, fake_time, fenced_labels):
    fake.inject_error(403, "forbidden", count=1, path="/actions/poweroff$", message="insufficient permissions")
    with pytest.raises(FenceError, match=r"qp-testnet-p1-primary.*forbidden.*read-write token"):
        _fence(client, primary, fake_time)
    assert len(_posts(fake, primary, "poweroff")) == 1
    assert fake_time.sleeps == []
    assert fenced_labels(primary) == {}


def test_fence_error_is_an_operator_error():
    assert issubclass(FenceError, QpoolError)


def test_fencing_twice_is_idempotent(fake, client, primary, fake_time, fenced_labels):
    first = _fence(client, primary, fake_time)
    fake_time.sleep(30)
    second = _fence(client, primary, fake_time)
    assert first.already_off is False
    assert second.already_off is True
    assert len(_posts(fake, primary, "poweroff")) == 2  # sent again: idempotent on an off server
    assert fenced_labels(primary)["qpool-fenced-at"] == str(int(second.fenced_at))


def test_logs_each_step_and_never_the_token(fake, client, primary, fake_time, token, caplog):
    caplog.set_level(logging.DEBUG)
    fake.inject_error(503, "unavailable", count=1, path="/actions/poweroff$")
    _fence(client, primary, fake_time)
    fencing_logs = [r.getMessage() for r in caplog.records if r.name == "qpool.fencing"]
    assert any("power-off requested" in m for m in fencing_logs)
    assert any("status is off" in m for m in fencing_logs)
    assert any("fenced at" in m for m in fencing_logs)
    assert all(token not in r.getMessage() for r in caplog.records)


def test_is_fenced_needs_label_and_off():
    labels = {"app": "quantapool", "qpool-fenced": "true"}
    assert is_fenced(ServerInfo(1, "a", "off", labels))
    assert not is_fenced(ServerInfo(1, "a", "running", labels))
    assert not is_fenced(ServerInfo(1, "a", "off", {"app": "quantapool"}))
    assert not is_fenced(ServerInfo(1, "a", "off", {"qpool-fenced": "false"}))


def test_is_fenced_on_a_freshly_fenced_server(fake, client, primary, fake_time):
    from qpool.hetzner import get_server

    assert not is_fenced(get_server(client, primary))
    _fence(client, primary, fake_time)
    assert is_fenced(get_server(client, primary))
    fake.backend(primary).power_on()
    assert not is_fenced(get_server(client, primary))


def test_verify_off(fake, client, primary, fake_time):
    assert verify_off(client, primary, sleep=fake_time.sleep) is False
    fake.backend(primary).power_off()
    assert verify_off(client, primary, sleep=fake_time.sleep) is True
    with pytest.raises(FenceError, match=r"server 424242\b.*not_found"):
        verify_off(client, 424242, sleep=fake_time.sleep)


def test_rejects_non_positive_timeouts(client, primary, fake_time):
    with pytest.raises(ValueError, match="positive"):
        _fence(client, primary, fake_time, poll_interval=0)


def test_request_timeout_is_retried(fake, primary, fake_time, token, fenced_labels):
    impatient = make_client(token, fake.endpoint, timeout=(2.0, 0.3))
    fake.delay_responses(1.0, count=1, path="/actions/poweroff$")
    result = _fence(impatient, primary, fake_time)
    assert fake_time.sleeps[0] == 0.5
    assert result.server_id == primary
    assert fenced_labels(primary)["qpool-fenced"] == "true"


def test_api_that_wrongly_reports_off_still_gets_the_power_off(fake, client, primary, fake_time, fenced_labels):
    """The API says "off" while the machine runs: the fence sends the power-off anyway (and reports the
    server off, which is why qpool.witnesses must not take this reading as proof on its own)."""
    fake.lie_off(primary)
    result = _fence(client, primary, fake_time)
    assert result.already_off is True
    assert len(_posts(fake, primary, "poweroff")) == 1


def test_power_off_error_on_an_already_off_server_is_tolerated(fake, client, fake_time, fenced_labels):
    sid = fake.add_server("qp-off2", {"app": "quantapool"}, None, None, InMemoryPower(running=False))
    fake.fail_next_action(sid, code="server_not_running", message="server is already off")
    result = _fence(client, sid, fake_time)
    assert result.already_off is True
    assert fenced_labels(sid)["qpool-fenced"] == "true"
