"""The fake Hetzner API itself: wire format, semantics the fencing relies on, knobs and CLI mode."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from lab.fake_hcloud import FakeHetzner, label_selector_matches

REPO = Path(__file__).resolve().parents[2]


def _api(fake, token, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, fake.endpoint + path, headers=headers, timeout=5, **kwargs)


class BlockingPower:
    """A host whose power-off takes as long as the test wants: proves success waits for it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = True

    def power_off(self) -> None:
        assert self.release.wait(timeout=10)
        self.running = False

    def power_on(self) -> None:
        self.running = True

    def is_running(self) -> bool:
        return self.running


class BrokenPower(BlockingPower):
    def power_off(self) -> None:
        raise RuntimeError("machinectl: no such machine")


def test_default_page_size_and_pagination_meta(fake, token):
    for n in range(30):
        fake.add_server(f"s{n:02d}", {"app": "quantapool"})
    first = _api(fake, token, "GET", "/servers").json()
    assert len(first["servers"]) == 25
    assert first["meta"]["pagination"] == {
        "page": 1, "per_page": 25, "previous_page": None, "next_page": 2, "last_page": 2,
        "total_entries": 30,
    }
    second = _api(fake, token, "GET", "/servers", params={"page": 2}).json()
    assert [s["name"] for s in second["servers"]] == [f"s{n:02d}" for n in range(25, 30)]
    assert second["meta"]["pagination"]["next_page"] is None
    capped = _api(fake, token, "GET", "/servers", params={"per_page": 500}).json()
    assert capped["meta"]["pagination"]["per_page"] == 50


def test_name_filter(fake, token):
    fake.add_server("alpha", {})
    fake.add_server("beta", {})
    body = _api(fake, token, "GET", "/servers", params={"name": "beta"}).json()
    assert [s["name"] for s in body["servers"]] == ["beta"]


def test_wrong_token_is_401_unauthorized(fake, primary):
    response = _api(fake, "nope", "GET", f"/servers/{primary}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert fake.requests[-1].authorized is False
    assert requests.get(fake.endpoint + "/servers", timeout=5).status_code == 401


def test_unknown_server_is_404_not_found(fake, token):
    response = _api(fake, token, "GET", "/servers/12345")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=quantapool", True),
        ("app==quantapool", True),
        ("app=other", False),
        ("app=quantapool,role=primary", True),
        ("app=quantapool,role=backup", False),
        ("role!=backup", True),
        ("role!=primary", False),
        ("pair", True),
        ("!pair", False),
        ("!missing", True),
        ("role in (backup,primary)", True),
        ("role notin (backup,primary)", False),
        ("app=quantapool,role in (backup, monitoring)", False),
    ],
)
def test_label_selector_semantics(selector, expected):
    labels = {"app": "quantapool", "role": "primary", "pair": "p1"}
    assert label_selector_matches(selector, labels) is expected


def test_invalid_label_selector_is_400(fake, token):
    response = _api(fake, token, "GET", "/servers", params={"label_selector": "=x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


def test_put_replaces_the_label_set_and_validates(fake, token, primary):
    response = _api(fake, token, "PUT", f"/servers/{primary}", json={"labels": {"only": "this"}})
    assert response.status_code == 200
    assert response.json()["server"]["labels"] == {"only": "this"}
    assert fake.server_labels(primary) == {"only": "this"}
    bad = _api(fake, token, "PUT", f"/servers/{primary}", json={"labels": {"k": "has space"}})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_input"
    assert fake.server_labels(primary) == {"only": "this"}


def test_second_action_while_one_runs_is_locked(fake, token, primary):
    fake.set_action_latency(primary, polls=5)
    first = _api(fake, token, "POST", f"/servers/{primary}/actions/poweroff")
    assert first.status_code == 201
    assert first.json()["action"]["status"] == "running"
    second = _api(fake, token, "POST", f"/servers/{primary}/actions/poweron")
    assert second.status_code == 423
    assert second.json()["error"]["code"] == "locked"


def test_shutdown_is_only_a_request(fake, token, primary):
    action = _api(fake, token, "POST", f"/servers/{primary}/actions/shutdown").json()["action"]
    assert action["command"] == "shutdown_server"
    polled = _api(fake, token, "GET", f"/actions/{action['id']}").json()["action"]
    assert polled["status"] == "success"
    assert fake.server_status(primary) == "running"
    assert fake.backend(primary).is_running() is True


def test_power_off_then_on(fake, token, primary):
    off = _api(fake, token, "POST", f"/servers/{primary}/actions/poweroff").json()["action"]
    assert off["command"] == "stop_server"
    assert off["resources"] == [{"id": primary, "type": "server"}]
    assert _api(fake, token, "GET", f"/servers/actions/{off['id']}").json()["action"]["status"] == "success"
    assert _api(fake, token, "GET", f"/servers/{primary}").json()["server"]["status"] == "off"
    on = _api(fake, token, "POST", f"/servers/{primary}/actions/poweron").json()["action"]
    assert _api(fake, token, "GET", f"/actions/{on['id']}").json()["action"]["status"] == "success"
    assert fake.server_status(primary) == "running"


def test_action_succeeds_only_after_backend_power_off_returned(token):
    backend = BlockingPower()
    with FakeHetzner(token, worker_grace=0.05) as fake:
        sid = fake.add_server("real-host", {"app": "quantapool"}, backend=backend)
        action = _api(fake, token, "POST", f"/servers/{sid}/actions/poweroff").json()["action"]
        for _ in range(3):
            polled = _api(fake, token, "GET", f"/servers/actions/{action['id']}").json()["action"]
            assert polled["status"] == "running"
        assert fake.server_status(sid) == "stopping"
        backend.release.set()
        polled = _api(fake, token, "GET", f"/servers/actions/{action['id']}").json()["action"]
        for _ in range(20):  # bounded: the worker thread finishes right after the release
            if polled["status"] != "running":
                break
            polled = _api(fake, token, "GET", f"/servers/actions/{action['id']}").json()["action"]
        assert polled["status"] == "success"
        assert fake.server_status(sid) == "off"


def test_backend_failure_becomes_action_error(token):
    with FakeHetzner(token) as fake:
        sid = fake.add_server("broken", {}, backend=BrokenPower())
        action = _api(fake, token, "POST", f"/servers/{sid}/actions/poweroff").json()["action"]
        polled = _api(fake, token, "GET", f"/servers/actions/{action['id']}").json()["action"]
        assert polled["status"] == "error"
        assert "no such machine" in polled["error"]["message"]
        assert fake.server_status(sid) == "running"


def test_injected_errors_are_scoped_and_counted(fake, token, primary):
    other = fake.add_server("other", {})
    fake.inject_error(503, "unavailable", count=2, server_id=primary)
    assert _api(fake, token, "GET", f"/servers/{other}").status_code == 200
    assert _api(fake, token, "GET", f"/servers/{primary}").status_code == 503
    assert _api(fake, token, "GET", f"/servers/{primary}").json()["error"]["code"] == "unavailable"
    assert _api(fake, token, "GET", f"/servers/{primary}").status_code == 200


def test_rate_limit_knob(fake, token):
    fake.rate_limit(count=1)
    limited = _api(fake, token, "GET", "/servers")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert "RateLimit-Limit" in limited.headers
    assert _api(fake, token, "GET", "/servers").status_code == 200


def test_clear_faults(fake, token, primary):
    fake.never_off(primary)
    fake.inject_error(500, "server_error", count=5)
    fake.clear_faults()
    assert _api(fake, token, "GET", f"/servers/{primary}").status_code == 200
    fake.backend(primary).power_off()
    assert fake.server_status(primary) == "off"


def test_state_file_round_trip(tmp_path, token):
    state = tmp_path / "hcloud.json"
    with FakeHetzner(token, state_file=state) as fake:
        sid = fake.add_server("lab-primary", {"app": "quantapool", "role": "primary"}, "192.0.2.10", "10.0.0.2")
        _api(fake, token, "PUT", f"/servers/{sid}", json={"labels": {"app": "quantapool", "x": "1"}})
    saved = json.loads(state.read_text())
    assert saved["servers"][0]["labels"] == {"app": "quantapool", "x": "1"}

    reloaded = FakeHetzner(token, state_file=state)
    reloaded.load_state()
    assert reloaded.server_labels(sid) == {"app": "quantapool", "x": "1"}


def test_cli_serves_state_file_on_loopback(tmp_path, token):
    state = tmp_path / "hcloud.json"
    state.write_text(json.dumps({"servers": [
        {"id": 77, "name": "lab-primary", "labels": {"app": "quantapool"}, "public_ipv4": "192.0.2.7",
         "private_ip": "10.0.0.7", "running": True},
    ]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.fake_hcloud", "--port", "0", "--token", token, "--state", str(state)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        assert lines and lines[0].startswith("http://127.0.0.1:"), "fake did not print its endpoint"
        endpoint = lines[0].strip()
        headers = {"Authorization": f"Bearer {token}"}
        body = requests.get(f"{endpoint}/servers/77", headers=headers, timeout=5).json()
        assert body["server"]["name"] == "lab-primary"
        requests.post(f"{endpoint}/servers/77/actions/poweroff", headers=headers, timeout=5)
        requests.put(f"{endpoint}/servers/77", headers=headers, timeout=5, json={"labels": {"f": "1"}})
        saved = json.loads(state.read_text())["servers"][0]
        assert saved["labels"] == {"f": "1"}
        assert saved["running"] is False
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()


def test_command_backend_fences_a_host_for_real(tmp_path, token):
    from lab.fake_hcloud import CommandBackend
    from qpool.fencing import fence_server
    from qpool.hetzner import make_client

    alive = tmp_path / "host-alive"
    alive.touch()
    backend = CommandBackend(
        ["rm", "-f", str(alive)], ["touch", str(alive)], ["test", "-e", str(alive)], timeout=10
    )
    with FakeHetzner(token) as fake:
        sid = fake.add_server("lab-primary", {"app": "quantapool"}, backend=backend)
        assert fake.server_status(sid) == "running"
        result = fence_server(
            make_client(token, fake.endpoint), sid, reason="lab", poll_interval=0.05,
            action_timeout=10, off_timeout=10,
        )
    assert result.already_off is False
    assert not alive.exists()


def test_backend_must_implement_the_protocol(fake):
    with pytest.raises(TypeError, match="lacks power_off"):
        fake.add_server("x", {}, backend=object())
