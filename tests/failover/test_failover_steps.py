"""The failover runs exactly the journaled steps of STEPS, in order, one function each."""

from __future__ import annotations

import inspect

from qpool import operations as ops


def test_one_function_per_step_in_order() -> None:
    assert tuple(ops.FAILOVER_STEPS) == ops.STEPS
    functions = list(ops.FAILOVER_STEPS.values())
    assert len(set(functions)) == len(functions)
    for fn in functions:
        assert list(inspect.signature(fn).parameters) == ["run"] and fn.__doc__


def test_run_failover_only_sequences_the_steps() -> None:
    """No step logic left inline: the runner's body is the loop over STEPS."""
    source = inspect.getsource(ops._run_failover)
    assert "FAILOVER_STEPS[step](run)" in source and len(source.splitlines()) < 10
