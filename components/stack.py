"""Wires validated config into components and exports what operators and `qpool` need.

Validation runs first and stops the program before any resource is registered, so bad config never
leaves a half-applied stack.
"""

from __future__ import annotations

import pulumi

from components.config import ConfigError
from components.network import Network, NetworkArgs
from components.pulumi_config import read_stack_config


def build_stack() -> None:
    try:
        cfg, _secrets = read_stack_config()
    except ConfigError as exc:
        for issue in exc.issues:
            pulumi.log.error(str(issue))
        raise pulumi.RunError(f"stack config has {len(exc.issues)} problem(s); nothing was changed") from None

    network = Network("qp", NetworkArgs(config=cfg))

    pulumi.export("environment", cfg.environment)
    pulumi.export("networkId", network.network.id)
    pulumi.export("hosts", {h.name: {"role": h.role, "pair": h.pair, "privateIp": h.private_ip}
                            for h in cfg.hosts()})
    pulumi.export("activeSigners", {p.name: f"qp-{cfg.environment}-{p.name}-{p.active}"
                                    for p in cfg.validator_pairs})
