"""Searching everything a pipeline run left behind for values that must not be there (S3, S4).

A scan is a list of (name, text or bytes): the name says where the text came from, so a
failing assertion names the table, file, log or run state that leaked.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, inspect, select, table, text

Texts = list[tuple[str, str | bytes]]


def leaks(secret: str, texts: Iterable[tuple[str, str | bytes]]) -> list[str]:
    """The names of the texts (or files) that contain the secret."""
    needle = secret.encode()
    return [name for name, text in texts if needle in (text if isinstance(text, bytes) else text.encode())]


def finder(values: Iterable[str]) -> re.Pattern[bytes]:
    """One pattern for any of ``values`` as a whole token (not inside a longer word, nor a
    JSON escape such as ``\\u0000``)."""
    needles = sorted({v for v in values if v}, key=len, reverse=True)
    assert needles, "nothing to look for"
    alternatives = b"|".join(re.escape(v.encode()) for v in needles)
    return re.compile(rb"(?<![\w\\])(?:" + alternatives + rb")(?!\w)")


def found(pattern: re.Pattern[bytes], texts: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """Where the pattern occurs: name of the text -> the first value found there."""
    out: dict[str, str] = {}
    for name, content in texts:
        data = content if isinstance(content, bytes) else content.encode()
        if match := pattern.search(data):
            out[name] = match.group().decode(errors="replace")
    return out


def files_under(*roots: Path) -> Texts:
    """Every file below the roots (or the root itself, when a file), as (path, bytes).

    A Parquet file comes twice: as stored (compressed: a value need not appear as written)
    and as its decoded rows in CSV.
    """
    paths = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    out: Texts = []
    for path in sorted(paths):
        data = path.read_bytes()
        out.append((str(path), data))
        if path.suffix == ".parquet":
            out.append((f"{path} (decoded)", pd.read_parquet(io.BytesIO(data)).to_csv(index=False)))
    return out


def warehouse_tables(engine: Engine, *, exclude: Iterable[str] = ()) -> Texts:
    """Every table and view of the warehouse (but ``exclude``), each as its rows in CSV."""
    inspector = inspect(engine)
    names = sorted(set(inspector.get_table_names()) | set(inspector.get_view_names()))
    out: Texts = []
    with engine.connect() as conn:
        for name in names:
            if name in set(exclude):
                continue
            frame = pd.read_sql(select(text("*")).select_from(table(name)), conn)
            out.append((f"table {name}", frame.to_csv(index=False)))
    return out


def prefect_records(since: dt.datetime) -> Texts:
    """Parameters, states, logs and artifacts of every flow run (and the states of its task
    runs) that started after ``since``; failed runs included."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    out: Texts = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),  # type: ignore[arg-type]
            limit=200,
        )
        ids = [run.id for run in runs]
        assert ids, "no flow runs recorded"
        for run in runs:
            out.append((f"parameters of {run.name}", json.dumps(run.parameters, default=str)))
            out.append((f"state of {run.name} ({run.state_type})", f"{run.state!r} {run.state!s}"))
        offset = 0
        while task_runs := client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200, offset=offset
        ):
            out += [(f"state of task {t.name} ({t.state_type})", repr(t.state)) for t in task_runs]
            offset += len(task_runs)
        offset = 0
        while batch := client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
        ):
            out += [(f"log {log.name}", log.message) for log in batch]
            offset += len(batch)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        out += [(f"artifact {a.key}", f"{a.description} {a.data}") for a in artifacts]
    return out


@dataclass(frozen=True)
class PartnerFile:
    """A partner's gifts file carrying raw user ids and emails, with two rows the gate quarantines."""

    path: Path
    user_ids: tuple[str, ...]  # every raw id in the file
    emails: tuple[str, ...]  # every email in the file
    rejected_id: str  # the raw id of the row with a negative amount (quarantined)
    orphan_email: str  # the email of the row without a user id (quarantined: no user_key)


def partner_gifts(path: Path, n: int = 60, days: int = 2) -> PartnerFile:
    """Write the file: ``n`` good gifts of four partner users over ``days`` days from 2026-01-05,
    plus a gift with a negative amount (its own user) and one without a user id.

    One bad row per day partition keeps each under the 5 % bad share: they are quarantined
    row by row, the rest loads.
    """
    from tests.data.quality_frames import good_frame

    frame = good_frame("raw_gifts", n=n, days=days).drop(columns=["event_date", "user_key"])
    frame["event_id"] = [f"pg-{i}" for i in range(n)]  # apart from any simulated event id
    user_ids: list[str | None] = [f"partner-{i % 4}" for i in range(n)]
    emails = [f"fan{i % 4}@mail.test" for i in range(n)]
    user_ids[0], emails[0] = "partner-9", "late.payer@mail.test"
    frame.loc[0, "amount"] = -5.0
    user_ids[1], emails[1] = None, "orphan@mail.test"
    frame["user_id"] = pd.Series(user_ids, index=frame.index, dtype=object)
    frame["email"] = emails
    frame.to_parquet(path)
    return PartnerFile(
        path=path,
        user_ids=tuple(sorted(set(frame["user_id"].dropna()))),
        emails=tuple(sorted(set(frame["email"]))),
        rejected_id="partner-9",
        orphan_email="orphan@mail.test",
    )
