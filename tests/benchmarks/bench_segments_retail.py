"""user_segments' estimator on real customers: Online Retail II, RFM features, the last month held out.

    python -m tests.benchmarks.bench_segments_retail [--home DIR]

Imports the shared Online Retail II file through ``liveyield import raw_orders`` with the shipped
mapping (cancellations and guest lines go to quarantine) into a fresh home, or reuses ``--home``
when its warehouse already holds the orders. Customers' RFM features come from the validated
raw_orders partitions: recency (days since the last order), frequency (distinct invoices) and
monetary (spend), both over the 365 days before a snapshot. The same SegmentModel class as the
catalog model (log1p + standardise, k in [3, 8] by silhouette among the ks whose bootstrap
stability reaches 0.9) is fitted on every customer active in the year before the last month
starts, and judged on the customers active in the last month, with their RFM at the end of the
data: silhouette and Davies–Bouldin in that holdout's own standardised space (as the lifecycle
evaluates), against a spend-quartile segmentation scored the same way. Skips, with the reason,
when the shared data folder is absent.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, func, select

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog.user_segments import STABLE_MIN, Dimension, SegmentModel, space_matrix, standardise
from tasks.models.metrics.clustering import METRICS as CLUSTERING
from tasks.schema import partition_status, quarantine
from tasks.warehouse import raw_table
from tests.benchmarks import common
from tests.conftest import SHARED_DATA

SOURCE = SHARED_DATA / "online_retail_ii" / "online_retail_ii.csv.xz"
MAPPING = common.ROOT / "infra" / "mappings" / "online_retail_ii.yaml"
WINDOW_DAYS = 365  # frequency and monetary look back one year (the usual RFM window)
HOLDOUT_DAYS = 30  # "the last month"
PSEUDONYM_KEY = "bench-segments-retail"
RFM: tuple[Dimension, ...] = (
    Dimension("recency", ("recency_days",), role="lapsed customer"),
    Dimension("frequency", ("frequency",), role="loyal customer"),
    Dimension("monetary", ("monetary",)),  # spend already names the value tier
)
PARAMS: dict[str, Any] = {"k_min": 3, "k_max": 8, "n_init": 4, "n_boot": 5, "sample_size": 2000, "seed": 7}


def _env(home: Path) -> dict[str, str]:
    return {
        "LIVEYIELD_HOME": str(home),
        "LIVEYIELD_DB_URL": f"sqlite:///{home / 'warehouse.db'}",
        "LIVEYIELD_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        # The import runs a Prefect flow on an ephemeral API; on shared cores it starts slowly.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }


def _orders(engine: Engine) -> pd.DataFrame:
    """Every order line of a validated raw_orders partition: customer, invoice, time, amount."""
    orders = raw_table("raw_orders")
    ps = partition_status
    validated = select(ps.c.partition_date).where(
        and_(ps.c.table_name == "raw_orders", ps.c.status == "validated")
    )
    query = select(orders.c.user_key, orders.c.order_ref, orders.c.event_ts, orders.c.amount).where(
        orders.c.event_date.in_(validated)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=["user_key", "order_ref", "event_ts", "amount"])
    return frame.astype({"event_ts": "int64", "amount": "float64"})


def _import_stats(engine: Engine) -> dict[str, int]:
    orders = raw_table("raw_orders")
    with engine.connect() as conn:
        loaded = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        quarantined = conn.execute(
            select(func.count()).select_from(quarantine).where(quarantine.c.table_name == "raw_orders")
        ).scalar_one()
        partitions: dict[str, int] = dict(
            conn.execute(
                select(partition_status.c.status, func.count())
                .where(partition_status.c.table_name == "raw_orders")
                .group_by(partition_status.c.status)
            ).all()
        )
    return {
        "loaded": int(loaded),
        "quarantined": int(quarantined),
        **{k: int(v) for k, v in partitions.items()},
    }


def rfm(orders: pd.DataFrame, snapshot: int) -> pd.DataFrame:
    """RFM per customer with an order in the WINDOW_DAYS before the snapshot (only data before it)."""
    past = orders[(orders["event_ts"] < snapshot) & (orders["event_ts"] >= snapshot - WINDOW_DAYS * DAY_S)]
    grouped = past.groupby("user_key")
    out = pd.DataFrame(
        {
            "recency_days": (snapshot - grouped["event_ts"].max()) / DAY_S,
            "frequency": grouped["order_ref"].nunique().astype("float64"),
            "monetary": grouped["amount"].sum(),
        }
    )
    return out.reset_index().sort_values("user_key", kind="stable").reset_index(drop=True)


def spend_quartiles(monetary: np.ndarray) -> np.ndarray:
    """The naive baseline: each customer's spend quartile (0..3) within the population."""
    cuts = np.unique(np.quantile(monetary, [0.25, 0.5, 0.75]))
    return np.searchsorted(cuts, monetary, side="right")


def _scores(frame: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    """Silhouette and Davies–Bouldin of a labelling in the frame's own standardised RFM space."""
    space = standardise(space_matrix(frame, RFM))
    cols: dict[str, np.ndarray] = {f"emb_{i}": space[:, i] for i in range(space.shape[1])}
    cols["prediction"] = np.asarray(labels, dtype="float64")
    ones = np.ones((1, len(frame)))
    return {name: float(CLUSTERING[name](cols, ones)[0]) for name in ("silhouette", "davies_bouldin")}


def _ensure_import(home: Path) -> tuple[float | None, str]:
    """Import the file into home's warehouse unless it already holds orders; (seconds, how)."""
    from flows.cli import main as cli

    database = home / "warehouse.db"
    if database.exists():
        from tasks.db import make_engine

        engine = make_engine(f"sqlite:///{database}")
        try:
            if _import_stats(engine)["loaded"] > 0:
                return None, f"reused the import already in {home.name}"
        finally:
            engine.dispose()
    os.environ.update(_env(home))
    started = time.perf_counter()
    code = cli(["import", "raw_orders", str(SOURCE), "--mapping", str(MAPPING)])
    if code != 0:
        raise RuntimeError(f"liveyield import raw_orders failed with exit code {code}")
    return time.perf_counter() - started, "imported with `liveyield import raw_orders --mapping`"


def run(home: Path) -> str:
    """Import (or reuse), fit on the year before the last month, judge on the last month; markdown."""
    from tasks.db import make_engine

    seconds, how = _ensure_import(home)
    engine = make_engine(f"sqlite:///{home / 'warehouse.db'}")
    try:
        stats = _import_stats(engine)
        orders = _orders(engine)
    finally:
        engine.dispose()
    last_day = dt.datetime.fromtimestamp(int(orders["event_ts"].max()), dt.UTC).date()
    end = int(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    cut = end - HOLDOUT_DAYS * DAY_S
    train = rfm(orders, cut)
    recent = set(orders.loc[orders["event_ts"] >= cut, "user_key"])
    holdout = rfm(orders, end)
    holdout = holdout[holdout["user_key"].isin(recent)].reset_index(drop=True)

    model = SegmentModel(
        RFM, value_columns=("monetary",), share_columns={}, fallback_role="regular customer", **PARAMS
    )
    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    segments = model.predict(holdout)
    ours = _scores(holdout, segments)
    base = _scores(holdout, spend_quartiles(holdout["monetary"].to_numpy()))
    train_scores = _scores(train, model.predict(train))

    def day(ts: int) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()

    metrics_rows = [
        [
            "user_segments estimator (k-means on log RFM)",
            model.k_,
            f"{ours['silhouette']:.3f}",
            f"{ours['davies_bouldin']:.3f}",
            f"{model.stability_:.3f}",
            f"{train_scores['silhouette']:.3f} / {train_scores['davies_bouldin']:.3f}",
        ],
        [
            "baseline: spend quartiles",
            4,
            f"{base['silhouette']:.3f}",
            f"{base['davies_bouldin']:.3f}",
            "–",
            "–",
        ],
    ]
    holdout_profiles = model.profiles_.assign(holdout_customers=np.bincount(segments, minlength=model.k_))
    profile_rows = [
        [
            int(r["segment"]),
            r["name"],
            f"{int(r['size']):,}",
            f"{int(r['holdout_customers']):,}",
            f"{r['mean_spend']:,.0f}",
            f"{r['z_recency']:+.2f} / {r['z_frequency']:+.2f} / {r['z_monetary']:+.2f}",
        ]
        for r in holdout_profiles.to_dict(orient="records")
    ]
    beats = ours["silhouette"] > base["silhouette"] and ours["davies_bouldin"] < base["davies_bouldin"]
    silhouettes = ", ".join(
        f"k={k}: {v:.3f} / {model.stability_by_k_[k]:.3f}" for k, v in model.silhouette_by_k_.items()
    )
    statuses = ", ".join(f"{v:,} {k}" for k, v in stats.items() if k not in ("loaded", "quarantined"))
    done = f"{how} in {seconds / 60:.1f} min" if seconds is not None else how
    import_line = (
        f"{done}: {stats['loaded']:,} order lines loaded, {stats['quarantined']:,} quarantined "
        f"(cancellations, guest checkouts); raw_orders partitions: {statuses}."
    )
    return "\n".join(
        [
            "## Segments on real customers (bench_segments_retail)",
            "",
            f"Online Retail II (UCI, CC BY 4.0), {import_line} RFM per customer from validated partitions: "
            f"recency = days since the last order, frequency = distinct invoices and monetary = spend, "
            f"over the {WINDOW_DAYS} days before the snapshot. Fitted on the {len(train):,} customers "
            f"active in the year before {day(cut)} (RFM as of then); judged on the {len(holdout):,} "
            f"customers active in the last {HOLDOUT_DAYS} days ({day(cut)} to {day(end - 1)}), RFM as of "
            f"{day(end)}. Same SegmentModel class as the catalog's user_segments (log1p, standardise, "
            f"k-means with k in [{PARAMS['k_min']}, {PARAMS['k_max']}] by silhouette among the ks whose "
            f"bootstrap stability reaches {STABLE_MIN}, ids by size, "
            f"seed {PARAMS['seed']}); fit {fit_seconds:.1f} s. Silhouette and Davies–Bouldin are "
            "measured in the holdout's own standardised space, as the lifecycle evaluates; stability "
            f"is the mean pairwise adjusted Rand index of {PARAMS['n_boot']} refits on bootstrap "
            "samples of the training customers. One run (deterministic for the seed).",
            "",
            common.table(
                [
                    "segmentation (last month)",
                    "k",
                    "silhouette (higher better)",
                    "Davies–Bouldin (lower better)",
                    "stability (ARI)",
                    "in-sample silhouette / DB",
                ],
                metrics_rows,
            ),
            "",
            f"Silhouette / bootstrap stability by k at fit time: {silhouettes}. The segments "
            f"{'beat' if beats else 'do NOT beat'} the spend-quartile baseline on both measures.",
            "",
            "Segment profiles (training customers; centroid z-scores of log recency / frequency / monetary):",
            "",
            common.table(
                [
                    "id",
                    "profile name",
                    "customers (fit)",
                    "customers (last month)",
                    "mean spend",
                    "z R / F / M",
                ],
                profile_rows,
            ),
        ]
    )


def main(argv: list[str]) -> None:
    """Run the benchmark (or say why it is skipped) and write results/segments_retail.md."""
    if not SOURCE.exists():
        print(f"skipped: the shared Online Retail II file is absent ({SOURCE.name} under {SOURCE.parent})")
        return
    if "--home" in argv:
        home = Path(argv[argv.index("--home") + 1]).resolve()
        home.mkdir(parents=True, exist_ok=True)
        text = run(home)
    else:
        with tempfile.TemporaryDirectory(prefix="ly-segments-retail-") as tmp:
            text = run(Path(tmp))
    common.write_section("segments_retail", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv)
