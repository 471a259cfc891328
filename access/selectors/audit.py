"""Reads from the domain: what a user may see, and checks over stored data."""

from __future__ import annotations

from dataclasses import dataclass

from access.models import AuditEvent
from access.models.audit import GENESIS_HASH


@dataclass(frozen=True)
class AuditChainReport:
    """The outcome of walking the audit chain: `ok`, how many events were checked, and the first problem."""

    ok: bool
    checked: int
    problem: str = ""
    seq: int | None = None


def audit_chain_verify(*, batch_size: int = 2000) -> AuditChainReport:
    """Walk the chain in order; name the first event that was altered, inserted or removed."""
    expected_seq, expected_prev, checked = 1, GENESIS_HASH, 0
    queryset = AuditEvent.objects.order_by("seq")
    last_seq = 0
    while True:
        batch = list(queryset.filter(seq__gt=last_seq)[:batch_size])
        if not batch:
            return AuditChainReport(ok=True, checked=checked)
        for event in batch:
            problem = _chain_problem(event, expected_seq, expected_prev)
            if problem:
                return AuditChainReport(ok=False, checked=checked, seq=event.seq, problem=problem)
            expected_seq, expected_prev, checked = event.seq + 1, event.hash, checked + 1
            last_seq = event.seq


def _chain_problem(event: AuditEvent, expected_seq: int, expected_prev: str) -> str:
    """What is wrong with `event` where the chain expects `expected_seq` after `expected_prev` ("" when nothing)."""
    if event.seq != expected_seq:
        return f"event #{expected_seq} is missing (next event found is #{event.seq}): removed"
    if event.prev_hash != expected_prev:
        return f"event #{event.seq} does not follow event #{event.seq - 1}: inserted or reordered"
    if event.compute_hash() != event.hash:
        return f"event #{event.seq} ({event.action}) was altered: its content no longer matches its hash"
    return ""
