"""Alertmanager: routes and receivers (secrets as file placeholders), flags and the start drop-in."""

from __future__ import annotations

import copy
import re
from typing import Any

from cloud_init.monitoring.layout import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_RENDER_SCRIPT,
    ALERTMANAGER_STORAGE,
    SECRET_NAME,
)
from core import ports
from core.config import HEARTBEAT_SECRET, StackConfig

#: Placeholder the host-side script replaces with a secret file's content (see the package docstring).
PLACEHOLDER_RE = re.compile(r"^@@file:(/[A-Za-z0-9._/-]+)@@$")

# Route timings. Critical: out within seconds of firing, repeated hourly while unresolved.
CRITICAL_ROUTE = {"group_wait": "10s", "group_interval": "1m", "repeat_interval": "1h"}
WARNING_ROUTE = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
#: A notification is repeated at the first group_interval tick *after* repeat_interval: with both at 1m the
#: heartbeat would go out every 2 minutes (measured), so the group is checked every 30s (pings every 60-90 s).
HEARTBEAT_ROUTE = {"group_wait": "0s", "group_interval": "30s", "repeat_interval": "1m"}
GROUP_BY = ["alertname", "host", "pair"]


def alertmanager_args() -> list[str]:
    # An empty cluster address turns off gossip clustering, which otherwise listens on 0.0.0.0:9094.
    return [
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--storage.path={ALERTMANAGER_STORAGE}",
        f"--web.listen-address=127.0.0.1:{ports.ALERTMANAGER}",
        "--cluster.listen-address=",
    ]


def secret_paths() -> dict[str, str]:
    """Secret name -> file on the host, from the shared secrets table."""
    from cloud_init.secrets_table import SECRET_FILES

    return {name: s.path for name, s in SECRET_FILES.items()}


def placeholder(path: str) -> str:
    if not PLACEHOLDER_RE.match(f"@@file:{path}@@"):
        raise ValueError(f"{path!r} is not a plain absolute path")
    return f"@@file:{path}@@"


def _telegram_chat_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"alerting.telegramChatId {value!r}: Alertmanager needs the numeric chat id "
                         "(e.g. -1001234567890), not a @name") from None


def _chat_integrations(cfg: StackConfig, paths: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if "discordWebhookUrl" in cfg.secrets_present:
        out["discord_configs"] = [{"webhook_url": placeholder(paths[SECRET_NAME["discord"]]),
                                   "send_resolved": True}]
    if "telegramBotToken" in cfg.secrets_present and cfg.alerting.telegram_chat_id:
        out["telegram_configs"] = [{
            "bot_token": placeholder(paths[SECRET_NAME["telegram"]]),
            "chat_id": _telegram_chat_id(cfg.alerting.telegram_chat_id),
            "parse_mode": "HTML",
            "send_resolved": True,
        }]
    return out


def alertmanager_template(cfg: StackConfig, paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The routing tree and receivers, secrets as placeholders (see the package docstring).

    Receivers exist only for the secrets the stack has; without any, every route ends in the `null` receiver
    and the config stays valid (mainnet refuses to deploy without PagerDuty and the heartbeat:
    core.config.deployment_issues). critical -> PagerDuty + chat, warning -> chat, heartbeat -> a
    webhook to the external dead-man's switch (heartbeatWebhookUrl), repeated every 60-90 s.
    """
    paths = paths or secret_paths()
    chat = _chat_integrations(cfg, paths)
    critical = dict(chat)
    if "pagerdutyRoutingKey" in cfg.secrets_present:
        critical["pagerduty_configs"] = [{
            "routing_key_file": paths[SECRET_NAME["pagerduty"]],
            "severity": "critical",
            "send_resolved": True,
        }]
    # `null` is the one receiver without an integration, on purpose: routes with nowhere to go end there.
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    heartbeat = HEARTBEAT_SECRET in cfg.secrets_present
    if heartbeat:
        # Alertmanager 0.25 has no url_file for webhooks: the URL is filled in on the host (package docstring).
        receivers.append({"name": "heartbeat", "webhook_configs": [
            {"url": placeholder(paths[SECRET_NAME["heartbeat"]]), "send_resolved": False}]})
    if critical:
        receivers.append({"name": "critical", **copy.deepcopy(critical)})
    if chat:
        receivers.append({"name": "warning", **copy.deepcopy(chat)})

    def route(severity: str, receiver: str, timing: dict[str, str]) -> dict[str, Any]:
        return {"receiver": receiver, "matchers": [f'severity="{severity}"'], **timing}

    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "warning" if chat else "null",
            "group_by": GROUP_BY,
            **WARNING_ROUTE,
            "routes": [
                route("heartbeat", "heartbeat" if heartbeat else "null", HEARTBEAT_ROUTE),
                route("critical", "critical" if critical else "null", CRITICAL_ROUTE),
                route("warning", "warning" if chat else "null", WARNING_ROUTE),
            ],
        },
        "inhibit_rules": [{
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["host", "pair"],
        }],
        "receivers": receivers,
    }


def _alertmanager_dropin() -> str:
    """Rebuild alertmanager.yml before every start and reload.

    `+` runs the script as root (the service runs as prometheus); `-` lets Alertmanager start on its last
    good config if the new one is rejected (a wrong webhook URL or a missing secret must not take alerting
    down). qp-start-monitoring runs the script itself first, strictly, so the bootstrap does see such a
    failure. Only the start may fall back to `null` routes, and only before any config of ours exists (first
    boot, secrets not yet installed).
    """
    return (
        "# Managed by quantapool-infra (cloud_init/monitoring.py): rebuild alertmanager.yml from its\n"
        "# secret-free template and the secret files before every start and reload.\n"
        "[Service]\n"
        f"ExecStartPre=-+{ALERTMANAGER_RENDER_SCRIPT} --first-boot-fallback\n"
        "ExecReload=\n"
        f"ExecReload=-+{ALERTMANAGER_RENDER_SCRIPT}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
    )
