"""Failover across transports: use the preferred one while its breaker admits calls.

The router asks each transport, in order of preference, whether it can reach the target now
(peer known, breaker admitting: a pure read). It sends through the first that can, and fails
over to the next when that send fails or is rejected before the message could have reached the
peer. Because an open breaker admits a probe again after its recovery timeout, traffic returns
to the preferred transport by itself once it has recovered: no timers in the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synapse_core.errors import CircuitOpenError
from synapse_core.transport.base import DeliveryReceipt, Transport
from synapse_core.transport.errors import (
    DeliveryError,
    FrameTooLargeError,
    MessageRejectedError,
    NoRouteError,
    PeerUnknownError,
    TransportError,
)
from synapse_core.transport.message import Message


class RouteSkipped(TransportError):
    """Recorded in ``NoRouteError.attempts`` for a transport that was not tried."""


@dataclass(frozen=True, slots=True)
class RouterStats:
    """Counters of a :class:`FailoverRouter`.

    Attributes:
        delivered: messages delivered, by transport label.
        failovers: messages delivered by a transport other than the first one.
        failed_attempts: sends tried on a transport that failed (then failed over).
        no_route: messages no transport could deliver.
        not_failed_over: sends that failed after the message may have reached the peer, and
            were raised rather than sent again elsewhere (not ``at_least_once``).
    """

    delivered: dict[str, int]
    failovers: int
    failed_attempts: int
    no_route: int
    not_failed_over: int = 0


class FailoverRouter:
    """Sends each message through the first transport able to deliver it.

    ::

        router = FailoverRouter([tcp_primary, tcp_backup])
        receipt = await router.send_message("node-b", message)
        receipt.transport, receipt.breaker   # which one delivered it

    A transport is skipped when it does not know the target or its breaker for the target is
    open (``await transport.can_reach(target)`` is false). A transport whose send failed before
    the message could reach the peer (a refused connection, ``NACK busy`` or ``misaddressed``,
    a ``DeliveryError`` whose ``maybe_delivered`` is false, ``CircuitOpenError`` from a race)
    is recorded and the next one is tried, unless ``failover_on_error=False``, which raises
    that error instead. A peer that refused the message (``MessageRejectedError`` otherwise)
    and ``FrameTooLargeError`` are raised at once: another path to the same peer would fare no
    better. When nothing delivers, ``NoRouteError`` lists every transport with what happened.

    A send that failed after its frame may have reached the peer (the connection broke after
    the frame left, the ack timed out, a bare ``TimeoutError`` or ``OSError`` from a transport
    that cannot tell) is raised as is, not sent again elsewhere: the peer may have it, and a
    second copy through another transport would be a duplicate. ``at_least_once=True`` fails
    over on those too; receivers acknowledge a message id they already delivered without
    delivering it again (within their ``dedup_window``, or ``max_age`` of a shared
    authenticator), so the application still sees it once when both paths reach one receiver
    transport (or its receiving transports share one authenticator).
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        failover_on_error: bool = True,
        at_least_once: bool = False,
    ) -> None:
        if not transports:
            raise ValueError("a router needs at least one transport")
        for transport in transports:
            if not isinstance(transport, Transport):
                raise TypeError(f"expected Transport instances, got {type(transport).__name__}")
        self._transports = tuple(transports)
        self.failover_on_error = failover_on_error
        self.at_least_once = at_least_once
        self._not_failed_over = 0
        self._delivered: dict[str, int] = {}
        self._failovers = 0
        self._failed_attempts = 0
        self._no_route = 0

    @staticmethod
    def label(transport: Transport) -> str:
        """How a transport is named in stats and errors: ``"<kind>:<node_id>"``."""
        return f"{transport.kind}:{transport.node_id}"

    @property
    def transports(self) -> tuple[Transport, ...]:
        """The transports, most preferred first."""
        return self._transports

    async def route_for(self, target: str) -> Transport | None:
        """The transport a send to *target* would try first now, or ``None``. Changes nothing."""
        for transport in self._transports:
            if await transport.can_reach(target):
                return transport
        return None

    async def can_reach(self, target: str) -> bool:
        """Whether some transport would try to deliver to *target* now."""
        return await self.route_for(target) is not None

    async def send_message(self, target: str, message: Message) -> DeliveryReceipt:
        """Deliver *message* through the first transport that can; see the class docstring."""
        attempts: list[tuple[str, BaseException]] = []
        for index, transport in enumerate(self._transports):
            label = self.label(transport)
            if not await transport.can_reach(target):
                attempts.append((label, RouteSkipped(_skip_reason(transport, target))))
                continue
            try:
                receipt = await transport.send_message(target, message)
            except MessageRejectedError as exc:
                if exc.code not in _FAILOVER_REFUSALS:
                    raise
                self._failed_attempts += 1
                attempts.append((label, exc))
                if not self.failover_on_error:
                    raise
            except FrameTooLargeError:
                raise
            except (TransportError, CircuitOpenError, TimeoutError, OSError) as exc:
                # A bare TimeoutError or OSError (ConnectionError...) from a transport that
                # does not wrap them in DeliveryError is a failed send all the same.
                self._failed_attempts += 1
                attempts.append((label, exc))
                if not self.failover_on_error:
                    raise
                if not self.at_least_once and maybe_delivered(exc):
                    self._not_failed_over += 1
                    raise
            else:
                self._delivered[label] = self._delivered.get(label, 0) + 1
                if index:
                    self._failovers += 1
                return receipt
        self._no_route += 1
        raise NoRouteError(target, attempts)

    def stats(self) -> RouterStats:
        """A snapshot of the counters."""
        return RouterStats(
            delivered=dict(self._delivered),
            failovers=self._failovers,
            failed_attempts=self._failed_attempts,
            no_route=self._no_route,
            not_failed_over=self._not_failed_over,
        )


_FAILOVER_REFUSALS = frozenset(("busy", "misaddressed"))


def maybe_delivered(exc: BaseException) -> bool:
    """Whether a failed send may have reached the peer (so a resend could duplicate it).

    ``False`` only when the failure says so: a breaker rejection, an unknown peer, a refused
    connection, or a ``DeliveryError`` with ``maybe_delivered`` false. Anything else (a bare
    ``TimeoutError`` or ``OSError`` from a transport that cannot tell) may have.
    """
    if isinstance(exc, DeliveryError):
        return exc.maybe_delivered
    return not isinstance(exc, CircuitOpenError | PeerUnknownError | ConnectionRefusedError)


def _skip_reason(transport: Transport, target: str) -> str:
    if not transport.running:
        return "transport not running"
    breaker = transport.circuit_breakers.get(target)
    if breaker is not None and not breaker.would_admit():
        wait = breaker.retry_after
        when = "no retry time yet" if wait is None else f"retry after {wait:.3f}s"
        return f"breaker {breaker.name!r} is {breaker.state.value} ({when})"
    return "peer unknown to this transport"
