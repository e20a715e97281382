"""One synchronous collection cycle: block height, every view, the pool balance, then the logs.

The HTTP server and the loop (``exporter.server``) are thin wrappers around
:meth:`Exporter.collect_once`, which tests drive directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from prometheus_client import CollectorRegistry

from exporter.addresses import format_address
from exporter.config import CONTRACT_KEYS, ExporterConfig
from exporter.endpoints import Endpoints, Selection, endpoint_label
from exporter.events import EventScanner
from exporter.metrics import ExporterMetrics
from exporter.rpc import RpcClient, RpcError, RpcRevertError, RpcTransportError
from exporter.views import ADDRESS_LABEL, EVENTS, VIEWS, Kind, View, scale

log = logging.getLogger(__name__)

RPC_METHODS = ("blockNumber", "call", "getBalance", "getLogs")


@dataclass
class CycleResult:
    """Outcome of one cycle, for logs and tests."""

    ok: bool = True
    block_height: int | None = None
    failed: list[str] = field(default_factory=list)  # "contract.call: reason"
    absent: list[str] = field(default_factory=list)  # optional views that reverted (not failures)
    events_ok: bool | None = None


class Exporter:
    """Owns the RPC client, the metrics and the event scanner for one configured pool."""

    def __init__(
        self,
        config: ExporterConfig,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.profile = config.profile_info
        self._clock = clock
        self.addresses = {key: config.address_bytes(key) for key in CONTRACT_KEYS}
        self.address_text = {key: format_address(raw, self.profile) for key, raw in self.addresses.items()}
        self.endpoints = Endpoints(
            config.endpoints,
            lambda url: RpcClient(
                url=url,
                namespace=self.profile.namespace,
                timeout=config.rpc_timeout_seconds,
                retries=config.rpc_retries,
                backoff=config.rpc_retry_backoff_seconds,
                observer=self._observe_rpc,
            ),
            clock=clock,
            stale_seconds=config.head_stale_seconds,
        )
        # The client reads go to; each cycle points it (and the scanner) at the selected endpoint.
        self.rpc = self.endpoints.clients[config.endpoints[0]]
        self.scanner = EventScanner(
            rpc=self.rpc,
            profile=self.profile,
            contracts=self.addresses,
            specs=EVENTS,
            state_dir=config.state_dir,
            max_block_range=config.log_max_block_range,
            max_ranges_per_cycle=config.log_max_ranges_per_cycle,
            reorg_depth=config.reorg_depth,
            start_block=config.start_block,
        )
        self.metrics = ExporterMetrics(
            event_totals=self.scanner.totals,
            shape_mismatches=self.scanner.mismatches,
            registry=registry,
        )
        for name in RPC_METHODS:
            self.metrics.rpc_errors.labels(method=self.rpc.method(name))  # a true 0, so increase() sees the first
        self._set_cursor_gauge()

    def _observe_rpc(self, method: str, seconds: float, ok: bool) -> None:
        self.metrics.observe_rpc(method, seconds, ok)

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def _set_cursor_gauge(self) -> None:
        cursor = self.scanner.cursor
        if cursor is not None:
            self.metrics.gauges.set("quantapool_exporter_event_cursor_block", cursor)

    def collect_once(self) -> CycleResult:
        """Run one full cycle; never raises for chain or RPC problems, reports them in metrics."""
        started = time.monotonic()
        result = CycleResult()
        gauges = self.metrics.gauges
        endpoint_down = False

        selection = self._select_endpoint(result)
        endpoint_down = selection.client is None or selection.regressed_from is not None
        # Pin every read of this cycle to one block so the views form a consistent snapshot.
        block_tag = hex(result.block_height) if result.block_height is not None else "latest"

        # Slow answers are bounded per request; this bounds the cycle: past one interval, the
        # remaining reads are skipped (reported failed) instead of pushing the next cycle back.
        deadline = started + self.config.interval_seconds

        def skip() -> bool:
            return endpoint_down or time.monotonic() > deadline

        for view in VIEWS:
            ok = ok_for_up = False
            if not skip():
                try:
                    self._read_view(view, block_tag)
                    ok = True
                except RpcRevertError as exc:
                    if view.optional:  # a deployment without this function: no value, but not a failure
                        ok_for_up = True
                        result.absent.append(f"{view.contract}.{view.function}: {exc}")
                    else:
                        result.failed.append(f"{view.contract}.{view.function}: {exc}")
                except (RpcError, DecodingError, ValueError, TypeError) as exc:
                    endpoint_down |= _unreachable(exc)
                    result.failed.append(f"{view.contract}.{view.function}: {exc}")
            else:
                result.failed.append(f"{view.contract}.{view.function}: skipped")
            gauges.set("quantapool_exporter_call_success", int(ok), contract=view.contract, call=view.function)
            result.ok &= ok or ok_for_up

        ok = False
        if not skip():
            try:
                balance = self.rpc.get_balance(self.address_text["deposit_pool"], block_tag)
                gauges.set("quantapool_pool_balance_qrl", balance / 10**18)
                ok = True
            except RpcError as exc:
                endpoint_down |= _unreachable(exc)
                result.failed.append(f"deposit_pool.getBalance: {exc}")
        else:
            result.failed.append("deposit_pool.getBalance: skipped")
        gauges.set("quantapool_exporter_call_success", int(ok), contract="deposit_pool", call="getBalance")
        result.ok &= ok

        if result.block_height is not None and not skip():
            scan = self.scanner.scan(result.block_height)
            result.events_ok = scan.ok
            if not scan.ok:
                result.failed.append(f"events.getLogs: {scan.error}")
        else:
            result.events_ok = False
            result.failed.append("events.getLogs: skipped")
        gauges.set("quantapool_exporter_event_scan_success", int(bool(result.events_ok)))
        result.ok &= bool(result.events_ok)
        self._set_cursor_gauge()

        gauges.set("quantapool_exporter_up", int(result.ok))
        if result.ok:
            gauges.set("quantapool_exporter_last_success_timestamp_seconds", self._clock())
        gauges.set("quantapool_exporter_last_cycle_duration_seconds", time.monotonic() - started)
        self._log_result(result, endpoint_down)
        return result

    def _select_endpoint(self, result: CycleResult) -> Selection:
        """Pick this cycle's endpoint (exporter/endpoints.py) and publish head and endpoint health."""
        gauges = self.metrics.gauges
        selection = self.endpoints.select()
        for url, head in selection.probed.items():
            label = endpoint_label(url)
            gauges.set("quantapool_exporter_rpc_endpoint_up", int(head is not None), endpoint=label)
            if head is not None:
                gauges.set("quantapool_exporter_rpc_endpoint_head", head, endpoint=label)
        for url in self.endpoints.urls:
            gauges.set("quantapool_exporter_rpc_endpoint_active", int(url == selection.url),
                       endpoint=endpoint_label(url))
        age = self.endpoints.head_age()
        if age is not None:
            gauges.set("quantapool_chain_head_age_seconds", age)
        if selection.client is None:
            result.ok = False
            result.failed.append("chain.blockNumber: no endpoint answered: " + "; ".join(selection.errors))
            return selection
        self.rpc = selection.client
        self.scanner.rpc = selection.client
        if selection.regressed_from is not None:
            # Reads at this head would publish older data than already published: skip them all.
            self.metrics.head_regressions.inc()
            result.ok = False
            result.failed.append(f"chain.head: {selection.head} is below the highest head already read "
                                 f"({selection.regressed_from}) on every answering endpoint")
            return selection
        result.block_height = selection.head
        gauges.set("quantapool_chain_block_height", selection.head)
        if selection.stale_seconds is not None:
            # The values are read (they are the newest any endpoint has) but the cycle is not a success.
            result.ok = False
            result.failed.append(f"chain.head: block {selection.head} has not advanced for "
                                 f"{selection.stale_seconds:.0f}s on any endpoint")
        return selection

    def _read_view(self, view: View, block_tag: str) -> None:
        """Call, decode and only then set the view's gauges: a failure leaves every one untouched."""
        raw = self.rpc.call(self.address_text[view.contract], view.selector, block_tag)
        values = decode(view.abi_types, raw)
        updates: list[Callable[[], None]] = []
        for out, value in zip(view.outputs, values, strict=True):
            labels = dict(out.labels)
            if out.kind is Kind.ADDRESS:
                updates.extend(self._address_updates(view, out.metric, labels, value))
            else:
                sample = scale(out.kind, value)
                updates.append(lambda m=out.metric, v=sample, lb=labels: self.metrics.gauges.set(m, v, **lb))
        for update in updates:
            update()

    def _address_updates(
        self, view: View, metric: str, labels: dict[str, str], value: object
    ) -> list[Callable[[], None]]:
        """Info-style update for an address output (one series per contract, address in a label)."""
        if not isinstance(value, str):
            raise TypeError(f"{view.function}() did not decode to an address")
        raw = bytes.fromhex(value.removeprefix("0x"))
        address_labels = {**labels, ADDRESS_LABEL[metric]: format_address(raw, self.profile)}
        gauges = self.metrics.gauges
        updates = [lambda: gauges.set_exclusive(metric, 1, labels, **address_labels)]
        if (view.contract, view.function) == ("stqrl", "depositPool"):
            matches = int(raw == self.addresses["deposit_pool"])
            updates.append(lambda: gauges.set("quantapool_stqrl_deposit_pool_matches", matches))
        return updates

    def _log_result(self, result: CycleResult, endpoint_down: bool) -> None:
        for line in result.absent:
            log.info("optional read absent (this deployment predates it): %s", line)
        if result.ok:
            log.info("cycle ok at block %s", result.block_height)
            return
        failed = [line for line in result.failed if not line.endswith(": skipped")]
        skipped = len(result.failed) - len(failed)
        if endpoint_down:
            log.warning("RPC unreachable or behind (%s); %d reads skipped", failed[0], skipped)
            return
        for line in failed:
            log.warning("read failed: %s", line)
        if skipped:
            log.warning("cycle exceeded interval_seconds: %d reads skipped", skipped)


def _unreachable(exc: Exception) -> bool:
    return isinstance(exc, RpcTransportError) and exc.unreachable
