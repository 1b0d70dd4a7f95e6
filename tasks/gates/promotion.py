"""Compare-and-set promotion of @champion, with a ledger of every move, rollback and reconcile.

MLflow has no compare-and-set on aliases (two concurrent promotions both "win"), so the
database is the source of truth: ``model_champions`` holds each model's champion and every move
is a row of ``alias_ledger`` (who, what, why, from → to, the gate report). A move happens in ONE
write transaction that locks the model's champion row (PostgreSQL ``SELECT … FOR UPDATE``, or an
``INSERT … ON CONFLICT DO NOTHING`` that the loser of a first-promotion race waits on; SQLite
``BEGIN IMMEDIATE`` serialises writers) and only moves it if it still names the champion the
gate compared against. After commit the MLflow alias follows; ``reconcile_alias`` re-points it
whenever the two differ (a crash between commit and alias move, or a slow writer overwriting a
newer alias), and promote/rollback/resolve call it first.

Integrity: before the move, the candidate's artifacts are downloaded and hashed, and must match
the ``model_sha256`` computed at registration; the move's ledger row then records that checksum,
the gate verdict and the SHA-256 of the gate report in the same transaction. A rollback row
carries the restored version's record. Consumers (tasks/registry/consumer.py) verify artifacts
against these rows, never against MLflow tags.

Version tags written here: ``gate=passed`` on every version that became champion (a pinned load
requires it), ``gate=rolled_back`` on a champion that a rollback removed, and ``gate_verdict``,
``gate_reason``, ``gate_report`` (record_gate_verdict) on every judged candidate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from tasks.db import bounded_lock_wait, write_tx
from tasks.gates.report import GateReport
from tasks.registry.hashing import artifact_sha256
from tasks.registry.ledger import champion_history, latest_record_row
from tasks.registry.tags import CHAMPION, GATE_PASSED, GATE_ROLLED_BACK, GATE_TAG, SHA_TAG
from tasks.registry.writes import alias_version, idempotent_write
from tasks.schema import alias_ledger, model_champions
from tasks.scoring.publish import follow_rollback, lock_publication

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MAX_TAG_VALUE = 100_000  # MLflow's limit for a registry tag value
_RECONCILE_ROUNDS = 3
_RECORD = ("model_sha256", "gate_verdict", "report_sha256")  # a move's integrity record (ledger)


class PromotionError(RuntimeError):
    """A promotion or rollback that must not happen (failed gate, mismatched report…)."""


class NothingToRollBack(PromotionError):
    """The ledger holds no earlier champion to go back to."""


class NoChampion(PromotionError):
    """The model has no champion yet, so there is nothing to score or load with."""


@dataclass(frozen=True)
class PromotionResult:
    """What a promote call did: promoted, or lost the compare-and-set race (nothing written)."""

    model: str
    promoted: bool
    lost_race: bool
    from_version: int | None
    to_version: int
    current_champion: int | None  # the champion after the call
    ledger_id: int | None
    alias_moved: bool
    detail: str = ""


class _LostRace(Exception):
    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


def current_champion(engine: Engine, model: str) -> int | None:
    """The champion version recorded in the database, or None before the first promotion."""
    with engine.connect() as conn:
        return _champion(conn, model)


def ledger(engine: Engine, model: str) -> list[dict[str, Any]]:
    """Every @champion move of a model, oldest first."""
    query = select(alias_ledger).where(alias_ledger.c.model_name == model).order_by(alias_ledger.c.id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def reconcile_alias(engine: Engine, client: MlflowClient, model: str) -> int | None:
    """Point MLflow's @champion at the database's champion when they differ; return that version."""
    champion = current_champion(engine, model)
    for _ in range(_RECONCILE_ROUNDS):
        alias = alias_version(client, model, CHAMPION)
        if alias != champion:
            if champion is None:
                log.warning("%s: @champion v%s has no champion in the database; removing it", model, alias)
                client.delete_registered_model_alias(model, CHAMPION)
            else:
                log.warning(
                    "%s: @champion is v%s but the database says v%s; re-pointing", model, alias, champion
                )
                _mark_champion(client, model, champion)
        # A slower writer may have moved the alias after our read: check the database again.
        latest = current_champion(engine, model)
        if latest == champion and alias_version(client, model, CHAMPION) == champion:
            return champion
        champion = latest
    return champion


def resolve_champion(engine: Engine, client: MlflowClient, model: str) -> int:
    """The champion version to score with (after reconciling the alias); call once per run."""
    _reconcile_quietly(engine, client, model)
    champion = current_champion(engine, model)
    if champion is None:
        raise NoChampion(f"{model}: no champion has been promoted yet; nothing to score with")
    return champion


def record_gate_verdict(client: MlflowClient, report: GateReport) -> None:
    """Store the gate verdict with the candidate's model version (tags gate_verdict/reason/report)."""
    if report.candidate_version is None:
        raise PromotionError("the report names no candidate_version to record the verdict on")
    version = str(report.candidate_version)
    client.set_model_version_tag(
        report.model, version, "gate_verdict", "passed" if report.passed else "failed"
    )
    client.set_model_version_tag(report.model, version, "gate_reason", report.reason[:5000])
    client.set_model_version_tag(report.model, version, "gate_report", _fit(report.to_json()))


def promote(
    engine: Engine,
    client: MlflowClient,
    model: str,
    *,
    candidate_version: int,
    expected_champion: int | None,
    report: GateReport,
    actor: str,
    flow_run_id: str | None,
    reason: str,
    created_ts: int | None = None,
) -> PromotionResult:
    """Make the candidate champion iff the champion is still ``expected_champion`` (compare-and-set).

    A lost race writes nothing and returns ``lost_race=True`` with the champion it found.
    ``created_ts`` defaults to the database server's clock.
    """
    if report.model and report.model != model:
        raise PromotionError(f"{model}: the gate report is for model {report.model!r}")
    if not report.passed:
        raise PromotionError(f"{model} v{candidate_version}: gate failed, not promoting: {report.reason}")
    if report.candidate_version is not None and report.candidate_version != candidate_version:
        raise PromotionError(
            f"{model}: the gate report judged v{report.candidate_version}, not v{candidate_version}"
        )
    if report.champion_version != expected_champion:
        raise PromotionError(
            f"{model}: the gate compared against champion {report.champion_version}, "
            f"but expected_champion is {expected_champion}"
        )
    _reconcile_quietly(engine, client, model)
    document = report.to_json()
    record = {
        "model_sha256": attest_artifact(client, model, candidate_version),
        "gate_verdict": GATE_PASSED,
        "report_sha256": hashlib.sha256(document.encode("utf-8")).hexdigest(),
    }
    try:
        with write_tx(engine) as conn:
            current = _lock_champion(conn, model)
            if current != expected_champion:
                raise _LostRace(current)
            if current == candidate_version:
                raise PromotionError(f"{model}: v{candidate_version} is already the champion")
            ledger_id = _move(
                conn,
                model,
                current=current,
                to_version=candidate_version,
                action="promote",
                reason=reason,
                report=document,
                actor=actor,
                flow_run_id=flow_run_id,
                created_ts=created_ts,
                record=record,
            )
    except _LostRace as lost:
        return PromotionResult(
            model,
            promoted=False,
            lost_race=True,
            from_version=expected_champion,
            to_version=candidate_version,
            current_champion=lost.current,
            ledger_id=None,
            alias_moved=False,
            detail=f"champion is {lost.current}, not the expected {expected_champion}: re-run the gate",
        )
    moved = _follow(engine, client, model, candidate_version)
    return PromotionResult(
        model,
        promoted=True,
        lost_race=False,
        from_version=expected_champion,
        to_version=candidate_version,
        current_champion=candidate_version,
        ledger_id=ledger_id,
        alias_moved=moved,
    )


def rollback(
    engine: Engine,
    client: MlflowClient,
    model: str,
    *,
    actor: str,
    reason: str,
    flow_run_id: str | None = None,
    created_ts: int | None = None,
) -> int:
    """Restore the champion before the current one (one call); returns the restored version.

    Rollbacks pop the ledger's history like a stack: v1 → v2 → v3, rollback → v2, rollback → v1,
    rollback → NothingToRollBack. The removed version is tagged gate=rolled_back. In the same
    transaction the restored version's latest score set is republished, or, when it has none, the
    published set is marked stale (tasks.scoring.follow_rollback).
    """
    _reconcile_quietly(engine, client, model)
    with write_tx(engine) as conn:
        lock_publication(conn, model)  # before the champion row, as publish takes them
        current = _lock_champion(conn, model)
        if current is None:
            raise NothingToRollBack(f"{model}: there is no champion to roll back")
        history = champion_history(conn, model)
        if not history or history[-1] != current:
            raise PromotionError(f"{model}: ledger history {history} does not end at champion v{current}")
        if len(history) < 2:
            raise NothingToRollBack(
                f"{model}: v{current} is the first champion; nothing earlier to roll back to"
            )
        target = history[-2]
        carried = latest_record_row(conn, model, target)  # the restored version's own record
        if carried is None:
            log.warning("%s: v%s has no integrity record; loads of it will be refused", model, target)
        ts = _db_now(conn) if created_ts is None else int(created_ts)
        _move(
            conn,
            model,
            current=current,
            to_version=target,
            action="rollback",
            reason=reason,
            report=json.dumps({"rolled_back": current, "restored": target}, sort_keys=True),
            actor=actor,
            flow_run_id=flow_run_id,
            created_ts=ts,
            record={k: (carried or {}).get(k) for k in _RECORD},
        )
        scores_note = follow_rollback(conn, model, restored=target, removed=current, ts=ts)
    log.info("%s: rolled back v%s → v%s; %s", model, current, target, scores_note)
    try:
        client.set_model_version_tag(model, str(current), GATE_TAG, GATE_ROLLED_BACK)
    except Exception:  # the database already records the rollback; the tag is advisory
        log.exception("%s: could not tag v%s as rolled back", model, current)
    _follow(engine, client, model, target)
    return target


def record_integrity(engine: Engine, client: MlflowClient, model: str) -> dict[int, str]:
    """Once, after upgrading to integrity records: fill the records of the champion history.

    Every version on the champion history whose ledger rows carry no checksum (moved before the
    records existed) is attested like a promotion (its artifact must match the checksum computed
    at registration) and its rows get that checksum; promote rows also get their gate verdict and
    report digest from the report they hold. Returns {version: sha256} of what was filled.
    """
    with engine.connect() as conn:
        missing = [
            v for v in dict.fromkeys(champion_history(conn, model)) if not latest_record_row(conn, model, v)
        ]
    attested = {version: attest_artifact(client, model, version) for version in missing}
    with write_tx(engine) as conn:
        for version, sha in attested.items():
            rows = conn.execute(
                select(alias_ledger.c.id, alias_ledger.c.action, alias_ledger.c.report).where(
                    alias_ledger.c.model_name == model,
                    alias_ledger.c.alias == CHAMPION,
                    alias_ledger.c.to_version == version,
                    alias_ledger.c.model_sha256.is_(None),
                )
            ).all()
            for row in rows:
                values: dict[str, Any] = {"model_sha256": sha}
                if row.action == "promote":
                    values["gate_verdict"] = GATE_PASSED  # promote() only moves on a passed gate
                    values["report_sha256"] = hashlib.sha256(row.report.encode("utf-8")).hexdigest()
                conn.execute(update(alias_ledger).where(alias_ledger.c.id == row.id).values(**values))
            log.warning("%s v%s: integrity record filled from its artifact (sha256 %s)", model, version, sha)
    return attested


# --- internals -------------------------------------------------------------------------


def _champion(conn: Connection, model: str) -> int | None:
    row = conn.execute(select(model_champions.c.version).where(model_champions.c.model_name == model)).first()
    return None if row is None else int(row.version)


def _lock_champion(conn: Connection, model: str) -> int | None:
    """Read the champion row under a lock (FOR UPDATE on PostgreSQL; SQLite holds the write lock)."""
    query = select(model_champions.c.version).where(model_champions.c.model_name == model)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    with bounded_lock_wait(conn, f"the champion row of {model}"):
        row = conn.execute(query).first()
    return None if row is None else int(row.version)


def _db_now(conn: Connection) -> int:
    """The database server's clock in epoch seconds (nothing in tasks/ reads the local clock)."""
    if conn.dialect.name == "postgresql":
        sql = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)"
    else:
        sql = "SELECT CAST(strftime('%s', 'now') AS INTEGER)"
    return int(conn.execute(text(sql)).scalar_one())


def _move(
    conn: Connection,
    model: str,
    *,
    current: int | None,
    to_version: int,
    action: str,
    reason: str,
    report: str,
    actor: str,
    flow_run_id: str | None,
    created_ts: int | None,
    record: dict[str, Any],
) -> int:
    """Write the ledger row (with the version's integrity record) and move the champion row
    (inside the caller's transaction)."""
    ts = _db_now(conn) if created_ts is None else int(created_ts)
    result = conn.execute(
        insert(alias_ledger).values(
            **{k: record.get(k) for k in _RECORD},
            model_name=model,
            alias=CHAMPION,
            from_version=current,
            to_version=to_version,
            action=action,
            reason=reason,
            report=report,
            actor=actor,
            flow_run_id=flow_run_id,
            created_ts=ts,
        )
    )
    ledger_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    values = {"version": to_version, "ledger_id": ledger_id, "updated_ts": ts}
    stmt: Any
    if current is None:
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            dialect_insert(model_champions)
            .values(model_name=model, **values)
            .on_conflict_do_nothing(index_elements=["model_name"])
        )
    else:
        stmt = (
            update(model_champions)
            .where(model_champions.c.model_name == model, model_champions.c.version == current)
            .values(**values)
        )
    conn.execute(stmt)
    # rowcount of INSERT … ON CONFLICT is not reported by every driver (psycopg gives -1):
    # read the row back instead. Another ledger id means a concurrent first promotion won.
    holder = conn.execute(
        select(model_champions.c.ledger_id, model_champions.c.version).where(
            model_champions.c.model_name == model
        )
    ).first()
    if holder is None or int(holder.ledger_id) != ledger_id:
        raise _LostRace(None if holder is None else int(holder.version))
    return ledger_id


def attest_artifact(client: MlflowClient, model: str, version: int) -> str:
    """The SHA-256 of the version's artifacts as downloaded now, which must equal the checksum
    computed at registration (the ``model_sha256`` tag): what the promotion records."""
    import mlflow

    mv = client.get_model_version(model, str(version))
    registered = (mv.tags or {}).get(SHA_TAG)
    if not registered:
        raise PromotionError(f"{model} v{version}: no {SHA_TAG} was computed at registration; not promoting")
    with tempfile.TemporaryDirectory(prefix="liveyield-attest-") as tmp:
        uri = client.get_model_version_download_uri(model, str(version))
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri
            )
            actual = artifact_sha256(Path(local))
        except (OSError, ValueError) as exc:
            raise PromotionError(f"{model} v{version}: artifact cannot be checksummed: {exc}") from exc
    if actual != registered:
        raise PromotionError(
            f"{model} v{version}: artifact sha256 {actual} differs from the sha256 {registered} "
            "computed at registration; not promoting"
        )
    return actual


def _mark_champion(client: MlflowClient, model: str, version: int) -> None:
    # Tag first, alias second: whoever sees the alias also sees the approval.
    v = str(version)
    idempotent_write(
        lambda: client.set_model_version_tag(model, v, GATE_TAG, GATE_PASSED),
        lambda: (client.get_model_version(model, v).tags or {}).get(GATE_TAG) == GATE_PASSED,
    )
    idempotent_write(
        lambda: client.set_registered_model_alias(model, CHAMPION, v),
        lambda: alias_version(client, model, CHAMPION) == version,
    )


def _reconcile_quietly(engine: Engine, client: MlflowClient, model: str) -> None:
    """Reconcile before a move; the database stays the truth even if MLflow is unreachable now."""
    try:
        reconcile_alias(engine, client, model)
    except Exception:
        log.exception("%s: could not reconcile @champion with the database (will retry next call)", model)


def _follow(engine: Engine, client: MlflowClient, model: str, version: int) -> bool:
    """Move the MLflow alias after commit; a failure is logged (reconcile repairs it later)."""
    try:
        _mark_champion(client, model, version)
        reconcile_alias(engine, client, model)
        return True
    except Exception:
        log.exception(
            "%s: committed champion v%s but could not move @champion; will reconcile", model, version
        )
        return False


def _fit(value: str) -> str:
    """A tag value within MLflow's limit (a truncated JSON report says so)."""
    if len(value) <= MAX_TAG_VALUE:
        return value
    return json.dumps({"truncated": True, "head": value[: MAX_TAG_VALUE - 100]})
