"""Promotion gates: judge a candidate against its spec's policy, then move @champion by compare-and-set.

report = evaluate_gate(spec.policy, candidate=ev, champion=champ_ev, baseline=base_ev,
                       deltas=deltas, data_validated=True, model=spec.name,
                       candidate_version=v, champion_version=champion)
record_gate_verdict(client, report)
if report.passed:
    result = promote(engine, client, spec.name, candidate_version=v, expected_champion=champion,
                     report=report, actor="retrain-model", flow_run_id=run_id, reason="weekly retrain")
    if result.lost_race: ...  # another promotion moved the champion: re-gate against it
"""

from tasks.gates.evaluate import evaluate_gate
from tasks.gates.metrics import EvaluationLike
from tasks.gates.promotion import (
    NoChampion,
    NothingToRollBack,
    PromotionError,
    PromotionResult,
    current_champion,
    ledger,
    promote,
    reconcile_alias,
    record_gate_verdict,
    resolve_champion,
    rollback,
)
from tasks.gates.report import GateCheck, GateReport
from tasks.models.metrics import higher_is_better
from tasks.registry.tags import CHALLENGER, CHAMPION

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EvaluationLike",
    "GateCheck",
    "GateReport",
    "NoChampion",
    "NothingToRollBack",
    "PromotionError",
    "PromotionResult",
    "current_champion",
    "evaluate_gate",
    "higher_is_better",
    "ledger",
    "promote",
    "reconcile_alias",
    "record_gate_verdict",
    "resolve_champion",
    "rollback",
]
