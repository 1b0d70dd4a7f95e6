"""product_recs' streamer affinity: the shelves a user is likely to see next, and the ranker's prior."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog import product_recs as pr
from tasks.models.catalog.product_recs.affinity import (
    affinity_candidates,
    cowatch,
    shelf_share,
    streamer_affinity,
    streamers_per_user,
)

C = 1_770_000_000 - 1_770_000_000 % DAY_S  # a midnight cut-off


def _shop(
    watch: list[tuple[str, str, int, float, str]], orders: list[tuple[str, str, int]]
) -> pr.CommerceData:
    """Three streamers: cook1 and cook2 (cooking, shelves c1..c3 and d1..d2), game1 (gaming, g1..g2).

    ``watch`` rows are (user, streamer, day_ts, seconds, stream category), orders (user, product, ts).
    """
    shelves = {"cook1": ["c1", "c2", "c3"], "cook2": ["d1", "d2"], "game1": ["g1", "g2"]}
    products = pd.DataFrame(
        [(p, C - 30 * DAY_S, s, "food", 20.0) for s, items in shelves.items() for p in items],
        columns=["product_id", "listed_ts", "streamer_id", "category", "price"],
    )
    return pr.commerce_data(
        pd.DataFrame(
            [(u, p, t, 20.0) for u, p, t in orders],
            columns=["user_key", "product_id", "event_ts", "unit_price"],
        ),
        pd.DataFrame(columns=["user_key", "product_id", "event_ts"]),
        products,
        pd.DataFrame(watch, columns=["user_key", "streamer_id", "day_ts", "seconds", "category"]),
    )


def _platform() -> list[tuple[str, str, int, float, str]]:
    """A week ago (the coming day's weekday) and since: cook1 leads cooking, game1's audience is larger
    still, and u, who watches cooking only, never saw cook1."""
    week = C - 7 * DAY_S
    return [
        ("u", "cook2", week, 4_000.0, "cooking"),
        ("u", "cook2", C - 3 * DAY_S, 4_000.0, "cooking"),
        ("u", "cook2", C - 2 * DAY_S, 4_000.0, "cooking"),
        ("v", "cook1", week, 20_000.0, "cooking"),
        ("w", "game1", week, 20_000.0, "gaming"),
        ("x", "game1", week, 20_000.0, "gaming"),
    ]


def _codes(data: pr.CommerceData, keys: list[str], vocabulary: np.ndarray) -> np.ndarray:
    return pr.data.codes_of(vocabulary, keys)


def test_affinity_prefers_the_popular_stream_of_the_users_category_over_a_bigger_one_of_another() -> None:
    data = _shop(_platform(), orders=[("u", "d1", C - DAY_S)])
    users = np.arange(len(data.users))
    u = int(_codes(data, ["u"], data.users)[0])
    aff = streamer_affinity(data, C, users)
    cook1, cook2, game1 = _codes(data, ["cook1", "cook2", "game1"], data.streamers)
    scores = aff.score(np.full(3, u), np.array([cook1, cook2, game1]))
    # u never watched cook1, but it holds most of cooking's audience: above cook2 and above
    # game1, which has the larger audience in a category u does not watch.
    assert scores[0] > scores[2] > 0 and scores[0] > scores[1] > 0
    np.testing.assert_allclose(aff.user_category.sum(axis=1), 1.0)
    # The prior keeps a thin share for every category the platform watches.
    assert (aff.user_category > 0).all()


def test_affinity_reads_nothing_at_or_after_the_cutoff() -> None:
    later = [("u", "game1", C, 50_000.0, "gaming"), ("u", "game1", C + DAY_S, 50_000.0, "gaming")]
    past = _shop(_platform(), orders=[])
    full = _shop(_platform() + later, orders=[])
    users = np.arange(len(past.users))
    a, b = streamer_affinity(past, C, users), streamer_affinity(full, C, users)
    np.testing.assert_array_equal(a.user_category, b.user_category)
    np.testing.assert_array_equal(a.streamer_share, b.streamer_share)


def test_shelf_share_is_laplace_smoothed_within_the_streamers_shelf() -> None:
    orders = [
        ("v", "c1", C - DAY_S),
        ("w", "c1", C - DAY_S + 1),
        ("v", "c2", C - 2 * DAY_S),
        ("v", "c1", C + 1),
    ]
    data = _shop(_platform(), orders)
    items = _codes(data, ["c1", "c2", "c3", "g1"], data.items)
    share = shelf_share(data, C, C - 28 * DAY_S, items)
    # cook1's shelf sold c1 twice and c2 once before C (the order after C does not count): (n + 1) / (3 + 3).
    np.testing.assert_allclose(share, [3 / 6, 2 / 6, 1 / 6, 1 / 2])


def test_streamers_per_user_follows_the_stated_rule() -> None:
    assert streamers_per_user(50, np.array([5, 5, 0, 10])) == 8  # ceil(50 / mean(5, 5, 10))
    assert streamers_per_user(50, np.array([0, 0])) == 0


def test_affinity_candidates_reach_the_shelves_of_streamers_never_watched() -> None:
    data = _shop(_platform(), orders=[("v", "c2", C - DAY_S), ("u", "d1", C - 5 * DAY_S)])
    users = np.arange(len(data.users))
    u = int(_codes(data, ["u"], data.users)[0])
    aff = streamer_affinity(data, C, users)
    items = np.arange(len(data.items))
    share = shelf_share(data, C, C - 28 * DAY_S, items)
    q, item, rank, expected = affinity_candidates(aff, data.item_streamer, share, per_source=4)
    mine = q == u
    names = list(data.items[item[mine]])
    # c2 on top: cook1 (never watched by u) leads u's category and c2 is what its shelf sells.
    assert names[0] == "c2" and "c1" in names and len(names) == 4
    assert list(rank[mine]) == [1, 2, 3, 4] and (np.diff(expected[mine]) <= 0).all()


def test_candidate_rows_carry_the_affinity_features_and_the_new_source() -> None:
    data = _shop(_platform(), orders=[("u", "d1", C - DAY_S), ("v", "c1", C - DAY_S)])
    rows = pr.candidates_at(data, C, ["u"]).set_index("product_id")
    affinity_rank = rows["affinity_rank"].astype("float64").to_dict()
    days_since = rows["days_since_user_streamer"].astype("float64").to_dict()
    assert affinity_rank["c1"] >= 1 and np.isnan(days_since["c1"])  # never watched by u, yet proposed
    assert rows.loc["d1", "days_since_user_streamer"] == 2.0
    assert rows.loc["d1", "user_streamer_share"] == 1.0 and rows.loc["c1", "user_streamer_share"] == 0.0
    # The expected share mixes u's own streamers and new ones by the platform's repeat share.
    repeat = streamer_affinity(data, C, pr.data.codes_of(data.users, ["u"])).repeat_share
    watch = repeat * rows["user_streamer_share"] + (1 - repeat) * rows["streamer_affinity"]
    np.testing.assert_allclose(rows["expected_share"], watch * rows["shelf_share"])


def test_cowatch_proposes_what_the_viewers_of_the_users_streamers_also_watch() -> None:
    # v and w watch cook2 and cook1 alike; x watches game1 only; u watched cook2 and nothing else.
    day = C - 3 * DAY_S
    watch = [("u", "cook2", day, 600.0, "cooking"), ("x", "game1", day, 9_000.0, "gaming")]
    watch += [(viewer, s, day, 900.0, "cooking") for viewer in "vw" for s in ("cook1", "cook2")]
    orders = [(viewer, "c1", C - DAY_S) for viewer in "uvwx"]
    data = _shop(watch, orders)
    later = _shop([*watch, ("u", "game1", C, 9_000.0, "gaming")], orders)
    users = np.sort(_codes(data, ["u", "x"], data.users))
    scores = cowatch(data, C, users, neighbours=5).toarray()
    np.testing.assert_array_equal(scores, cowatch(later, C, users, neighbours=5).toarray())  # past only
    cook1, cook2, game1 = _codes(data, ["cook1", "cook2", "game1"], data.streamers)
    u_row = scores[list(users).index(_codes(data, ["u"], data.users)[0])]
    assert u_row[cook1] > 0 and u_row[game1] == 0  # cook1 is u's neighbour through v and w; game1 is not
    assert (
        u_row[cook2] == 0
    )  # a streamer is not its own neighbour: u's own streamers come from the shelf source


def _prior_frame(n_queries: int, seed: int) -> pd.DataFrame:
    """Ten candidates per query, one bought; a noisy 'prior' knows it, 'noise' does not."""
    rng = np.random.default_rng(seed)
    q = np.repeat(np.arange(n_queries), 10)
    label = (np.tile(np.arange(10), n_queries) == rng.integers(0, 10, n_queries).repeat(10)).astype(int)
    prior = np.exp(2.0 * label + rng.normal(0.0, 1.0, len(q)))
    return pd.DataFrame({"query_id": q, "label": label, "prior": prior, "noise": rng.normal(size=len(q))})


def test_the_ranker_starts_from_the_prior_and_keeps_its_ranking() -> None:
    frame = _prior_frame(300, seed=5)
    train, valid = frame[frame["query_id"] < 200], frame[frame["query_id"] >= 200].reset_index(drop=True)
    columns = ["query_id", "prior", "noise"]
    # One tiny tree: the ranking is the prior's own (log is monotone), whatever the tree learnt.
    tiny = {"seed": 1, "n_estimators": 1, "learning_rate": 1e-6, "prior": "prior"}
    scores = pr.ProductRanker(tiny).fit(train[columns], train["label"]).predict(valid[columns])
    by_query = valid.assign(s=scores).groupby("query_id")
    assert (by_query["s"].rank().to_numpy() == by_query["prior"].rank().to_numpy()).all()
    assert ((scores > 0) & (scores < 1)).all()
    # Without the prior, the same tiny model has only the first split to rank by: worse.
    plain = {k: v for k, v in tiny.items() if k != "prior"}
    flat = pr.ProductRanker(plain).fit(train[columns], train["label"]).predict(valid[columns])
    assert pr.ranking_at_k(valid, scores)["ndcg_10"] > pr.ranking_at_k(valid, flat)["ndcg_10"]


def test_the_ranker_names_a_missing_prior_column() -> None:
    frame = _prior_frame(20, seed=6)
    ranker = pr.ProductRanker({"seed": 1, "n_estimators": 2, "prior": "expected"})
    with pytest.raises(ValueError, match="prior column 'expected'"):
        ranker.fit(frame[["query_id", "noise"]], frame["label"])


def test_a_shop_without_streamers_gets_no_affinity_candidates_and_empty_affinity_features() -> None:
    # An imported web shop: products on no shelf, no watch time (the candidate sources still work).
    data = pr.commerce_data(
        pd.DataFrame(
            [("a", "p1", C - DAY_S, 5.0), ("b", "p1", C - DAY_S, 5.0), ("b", "p2", C - DAY_S, 5.0)],
            columns=["user_key", "product_id", "event_ts", "unit_price"],
        ),
        pd.DataFrame(columns=["user_key", "product_id", "event_ts"]),
        pd.DataFrame(columns=["product_id", "listed_ts", "streamer_id", "category", "price"]),
        pd.DataFrame(columns=["user_key", "streamer_id", "day_ts", "seconds", "category"]),
    )
    rows = pr.candidates_at(data, C, ["a", "b"])
    assert set(rows["product_id"]) == {"p1", "p2"}
    empty = [
        "affinity_rank",
        "cowatch_rank",
        "streamer_affinity",
        "shelf_share",
        "expected_share",
        "cowatch_score",
    ]
    assert rows[empty].isna().all().all()
