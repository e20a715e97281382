"""qpool: the operator CLI for the few stateful, safety-critical operations Pulumi must never perform."""
