"""The warehouse's integrity records of approved versions: what a consumer checks an artifact against.

Every @champion move (``alias_ledger``, written by tasks/gates/promotion.py in the same
compare-and-set transaction as the move) records the artifact SHA-256 of the version it moves to,
its gate verdict and the digest of the gate report. MLflow tags can be set by anyone with MLflow
access; these rows only by the warehouse's writers, so they are what a load is verified against.

A version is approved while it is on the champion history (promote pushes, rollback pops): the
current champion and the champions before it, never a version a rollback removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from tasks.registry.register import RegistryError
from tasks.registry.tags import CHAMPION
from tasks.schema import alias_ledger, model_champions


class UnapprovedModel(RegistryError):
    """The requested version is not approved (no champion, or not on the champion history)."""


@dataclass(frozen=True)
class IntegrityRecord:
    """What the warehouse recorded when a version became champion."""

    model: str
    version: int
    ledger_id: int | None
    model_sha256: str | None  # None: moved before integrity records existed (unverifiable)
    gate_verdict: str | None
    report_sha256: str | None


def champion_history(conn: Connection, model: str) -> list[int]:
    """The champion history as a stack of versions: promote pushes, rollback pops."""
    query = (
        select(alias_ledger.c.action, alias_ledger.c.to_version)
        .where(alias_ledger.c.model_name == model, alias_ledger.c.alias == CHAMPION)
        .order_by(alias_ledger.c.id)
    )
    stack: list[int] = []
    for action, to_version in conn.execute(query):
        if action == "rollback":
            if stack:
                stack.pop()
        elif to_version is not None:
            stack.append(int(to_version))
    return stack


def latest_record_row(conn: Connection, model: str, version: int) -> dict[str, object] | None:
    """The newest ledger move to ``version`` that carries a checksum, as a mapping (or None)."""
    row = conn.execute(
        select(alias_ledger)
        .where(
            alias_ledger.c.model_name == model,
            alias_ledger.c.alias == CHAMPION,
            alias_ledger.c.to_version == version,
            alias_ledger.c.model_sha256.is_not(None),
        )
        .order_by(alias_ledger.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else dict(row._mapping)


def approved_record(engine: Engine, model: str, version: int | None = None) -> IntegrityRecord:
    """The record of the warehouse's champion (or of a pinned approved version); refuse anything else.

    Raises UnapprovedModel when there is no champion or the pinned version is not on the champion
    history. A version whose moves recorded no checksum comes back with ``model_sha256=None``:
    the caller refuses it after naming the digest of what it downloaded.
    """
    with engine.connect() as conn:
        if version is None:
            champion = conn.execute(
                select(model_champions.c.version).where(model_champions.c.model_name == model)
            ).first()
            if champion is None:
                raise UnapprovedModel(f"{model}: no champion in the warehouse; nothing is approved")
            version = int(champion.version)
        elif int(version) not in champion_history(conn, model):
            raise UnapprovedModel(
                f"{model} v{version}: not approved (never champion in the warehouse's ledger, "
                "or removed by a rollback)"
            )
        row = latest_record_row(conn, model, int(version))
    if row is None:
        return IntegrityRecord(model, int(version), None, None, None, None)
    return IntegrityRecord(
        model=model,
        version=int(version),
        ledger_id=int(str(row["id"])),
        model_sha256=str(row["model_sha256"]),
        gate_verdict=None if row["gate_verdict"] is None else str(row["gate_verdict"]),
        report_sha256=None if row["report_sha256"] is None else str(row["report_sha256"]),
    )
