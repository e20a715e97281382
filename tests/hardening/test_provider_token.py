"""`hcloud:token` per stack, as a secret: a real preview/up refuses the ambient HCLOUD_TOKEN (issue 13)."""

from __future__ import annotations

import pulumi
import pytest
from pulumi.runtime import settings

from components.pulumi_config import provider_token_problems, refuse_ambient_provider_token


def test_problems_name_the_key_and_the_command() -> None:
    assert provider_token_problems("tok", True) == []
    (missing,) = provider_token_problems(None, False)
    assert missing.startswith("hcloud:token: not set in this stack; run `pulumi config set --secret hcloud:token")
    assert "HCLOUD_TOKEN is not accepted" in missing
    (plain,) = provider_token_problems("tok", False)
    assert "plain text" in plain and "tok" not in plain.replace("token", "")


@pytest.fixture
def real_monitor(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Pretend to run under a real engine (not qpool's mocks) with the given config."""
    monkeypatch.setattr(settings, "get_monitor", lambda: object())
    monkeypatch.setenv("HCLOUD_TOKEN", "ambient-token")

    def use(config: dict[str, str], secret_keys: list[str]) -> None:
        pulumi.runtime.set_all_config(config, secret_keys)

    yield use
    pulumi.runtime.set_all_config({}, [])


def test_a_real_deploy_without_a_stack_token_stops(real_monitor) -> None:  # type: ignore[no-untyped-def]
    real_monitor({}, [])
    with pytest.raises(pulumi.RunError, match="hcloud:token is not usable; nothing was changed"):
        refuse_ambient_provider_token()


def test_a_plain_text_stack_token_stops(real_monitor) -> None:  # type: ignore[no-untyped-def]
    real_monitor({"hcloud:token": "plain"}, [])
    with pytest.raises(pulumi.RunError):
        refuse_ambient_provider_token()


def test_a_secret_stack_token_passes(real_monitor) -> None:  # type: ignore[no-untyped-def]
    real_monitor({"hcloud:token": "secret-token"}, ["hcloud:token"])
    refuse_ambient_provider_token()


def test_plan_under_mocks_needs_no_token(run_stack, testnet_raw) -> None:  # type: ignore[no-untyped-def]
    run = run_stack(testnet_raw)  # the real program under mocks: no hcloud:token anywhere
    assert run.of_type("hcloud:index/server:Server")


@pytest.mark.parametrize("provider, ok", [(None, False), ("default", False), ("hashivault://qp-mainnet", True),
                                          ("awskms://alias/qp-mainnet?region=eu-central-1", True),
                                          ("passphrase", True)])
def test_the_mainnet_stack_file_names_its_secrets_provider(tmp_path, provider, ok) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from core.config import ConfigError
    from qpool.stacks import load_stack
    from tests.conftest import filled_mainnet_doc

    doc = filled_mainnet_doc()
    assert doc["secretsprovider"].startswith("hashivault://")  # the committed file names one
    doc.pop("secretsprovider")
    if provider is not None:
        doc["secretsprovider"] = provider
    path = tmp_path / "Pulumi.mainnet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if ok:
        load_stack("mainnet", path)
    else:
        with pytest.raises(ConfigError) as raised:
            load_stack("mainnet", path)
        assert any("secrets provider" in str(i) for i in raised.value.issues)
