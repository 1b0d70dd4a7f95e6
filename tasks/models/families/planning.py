"""The capacity-planning LP: serving capacity per region and hour, and its backtest on realised demand.

The scheduling half of traffic scheduling (capacity_plan plans on the traffic forecast). For
every target hour the plan allocates serving capacity to each region and may plan spill-over
of a region's load onto a neighbour's capacity, at the least cost (serving cost per region,
spill-over cost per link) within each region's serving limit (raw_traffic.capacity_viewers).
Regions are coupled only through spill-over at the same hour, so the hours of a backtest are
independent blocks of one sparse LP.

Spill-over is single hop: a region's viewers are served at home or by a direct neighbour,
never relayed further (every hop adds latency the SLA does not allow twice). A region may
still take more of a neighbour's overflow than its spare capacity by moving some of its own
viewers on to its other neighbours: each viewer still travels one hop, and pays for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from tasks.vocabulary import REGIONS

# --- the network, declared as data -------------------------------------------------------

# Cost of one viewer-hour of serving capacity, relative to na: cheaper where hosting and
# transit are cheaper. The spread is what makes spill-over a real choice near the limits.
SERVING_COST: dict[str, float] = {
    "na": 1.0,
    "eu": 1.05,
    "latam": 0.85,
    "sea": 0.8,
    "india": 0.7,
    "mena": 0.95,
}
# Capacity a region keeps warm whatever the forecast (none by default: the plan is free to
# drain a region at night; a floor would cost the perfect plan the same).
MIN_CAPACITY: dict[str, float] = dict.fromkeys(REGIONS, 0.0)
# Neighbouring regions and the cost of serving one viewer-hour across the link (transit plus
# a latency penalty). On every directed link serving_cost[to] + link cost > serving_cost[from],
# so the declared plan spills only where a region's limit forces it to.
SPILL_COST: dict[tuple[str, str], float] = {
    ("na", "latam"): 0.25,
    ("na", "eu"): 0.35,
    ("na", "sea"): 0.45,
    ("eu", "mena"): 0.25,
    ("mena", "india"): 0.3,
    ("india", "sea"): 0.3,
}
# Cost of one viewer-hour of demand left unserved (SLA credit and lost revenue): far above
# any serving cost, so a plan leaves load unserved only when every reachable limit is full.
SHORTFALL_COST = 10.0
TOLERANCE = 1e-6  # viewers; LP round-off below this is no shortfall
CHUNK_HOURS = 250  # hours per LP call: HiGHS is fastest on blocks of this size


@dataclass(frozen=True)
class Network:
    """Regions, their costs and minimum capacity, and the spill-over links between them."""

    regions: tuple[str, ...]
    serving_cost: np.ndarray  # (n,)
    min_capacity: np.ndarray  # (n,)
    edges: np.ndarray  # (m, 2) int: directed (from, to); both directions of every link
    edge_cost: np.ndarray  # (m,)
    shortfall_cost: float = SHORTFALL_COST

    @classmethod
    def declare(
        cls,
        serving_cost: Mapping[str, float],
        spill_cost: Mapping[tuple[str, str], float],
        min_capacity: Mapping[str, float] | None = None,
        shortfall_cost: float = SHORTFALL_COST,
    ) -> Network:
        """A network from per-region costs and undirected links (each usable both ways)."""
        regions = tuple(serving_cost)
        index = {r: i for i, r in enumerate(regions)}
        edges: list[tuple[int, int]] = []
        costs: list[float] = []
        for (a, b), cost in spill_cost.items():
            if a not in index or b not in index or a == b:
                raise ValueError(f"spill-over link {a}-{b} joins unknown or identical regions")
            edges += [(index[a], index[b]), (index[b], index[a])]
            costs += [float(cost), float(cost)]
        floor = min_capacity or {}
        return cls(
            regions=regions,
            serving_cost=np.array([serving_cost[r] for r in regions], dtype="float64"),
            min_capacity=np.array([float(floor.get(r, 0.0)) for r in regions], dtype="float64"),
            edges=np.array(edges, dtype=np.int64).reshape(-1, 2),
            edge_cost=np.array(costs, dtype="float64"),
            shortfall_cost=float(shortfall_cost),
        )

    @property
    def n(self) -> int:
        """Number of regions."""
        return len(self.regions)

    @property
    def spill_can_pay(self) -> bool:
        """Whether spilling can ever beat serving at home (a cheaper link, or idle floor capacity)."""
        src, dst = self.edges[:, 0], self.edges[:, 1]
        cheaper = self.serving_cost[dst] + self.edge_cost < self.serving_cost[src]
        return bool(cheaper.any() or (self.min_capacity > 0).any())

    def index(self, regions: np.ndarray) -> np.ndarray:
        """Position of each region name in this network (ValueError for an unknown one)."""
        lookup = {r: i for i, r in enumerate(self.regions)}
        try:
            return np.array([lookup[str(r)] for r in regions], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"region {exc.args[0]!r} is not in the network {self.regions}") from exc

    def link_names(self) -> list[tuple[str, str]]:
        """(from, to) region names of every directed link, in edge order."""
        return [(self.regions[a], self.regions[b]) for a, b in self.edges]


NETWORK = Network.declare(SERVING_COST, SPILL_COST, MIN_CAPACITY)


@dataclass(frozen=True)
class Plan:
    """Plans (or backtests) of G hours: capacity per region, spill-over per link, shortfall, cost."""

    capacity: np.ndarray  # (G, n) serving capacity
    spill: np.ndarray  # (G, m) viewers of edge-source load served at the edge's target
    shortfall: np.ndarray  # (G, n) load left unserved
    cost: np.ndarray  # (G, n) per region: its capacity's serving cost + spill it sends + shortfall

    def spill_out(self, network: Network) -> np.ndarray:
        """(G, n) load each region sends to its neighbours."""
        return _by_region(self.spill, network.edges[:, 0], network.n)

    def spill_in(self, network: Network) -> np.ndarray:
        """(G, n) load each region takes from its neighbours."""
        return _by_region(self.spill, network.edges[:, 1], network.n)


def _by_region(per_edge: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    total = np.zeros((len(per_edge), n))
    for e, r in enumerate(ends):
        total[:, r] += per_edge[:, e]
    return total


def _incidence(network: Network) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(n, m) matrices: which links leave each region, and which enter it."""
    m = len(network.edges)
    cols = np.arange(m)
    shape = (network.n, m)
    out = sp.csr_matrix((np.ones(m), (network.edges[:, 0], cols)), shape=shape)
    into = sp.csr_matrix((np.ones(m), (network.edges[:, 1], cols)), shape=shape)
    return out, into


def _solve_blocks(
    block: sp.csr_matrix, c: np.ndarray, b_ub: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Solve G independent copies of one LP block (rows of b_ub/lower/upper), in chunks."""
    g, width = lower.shape
    x = np.zeros((g, width))
    for start in range(0, g, CHUNK_HOURS):
        k = min(CHUNK_HOURS, g - start)
        rows = slice(start, start + k)
        result = linprog(
            np.tile(c, k),
            A_ub=sp.kron(sp.identity(k, format="csr"), block, format="csc"),
            b_ub=b_ub[rows].ravel(),
            bounds=np.column_stack([lower[rows].ravel(), upper[rows].ravel()]),
            method="highs",
        )
        if result.status != 0 or result.x is None:  # feasible by construction (shortfall)
            raise RuntimeError(f"capacity LP failed: {result.message}")
        x[rows] = np.asarray(result.x, dtype="float64").reshape(k, width)
    return x


def _blocks(values: np.ndarray, n: int, name: str) -> np.ndarray:
    blocks = np.asarray(values, dtype="float64")
    if blocks.ndim == 1:
        blocks = blocks[None, :]
    if blocks.ndim != 2 or blocks.shape[1] != n:
        raise ValueError(f"{name} must have one column per region ({n}), got shape {blocks.shape}")
    if not np.isfinite(blocks).all() or (blocks < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return blocks


def _costed(capacity: np.ndarray, spill: np.ndarray, shortfall: np.ndarray, network: Network) -> Plan:
    spill_cost = _by_region(spill * network.edge_cost, network.edges[:, 0], network.n)
    cost = capacity * network.serving_cost + spill_cost + shortfall * network.shortfall_cost
    return Plan(capacity, spill, shortfall, cost)


def solve_plan(load: np.ndarray, limit: np.ndarray, network: Network = NETWORK) -> Plan:
    """Least-cost capacity and spill-over serving ``load`` within ``limit``, per hour (rows).

    ``load`` and ``limit`` are (G, n): G independent hours, one column per region. Per hour:
    minimise Σ serving_cost·capacity + Σ link_cost·spill + shortfall_cost·shortfall subject to
    spill out of r + shortfall_r ≤ load_r (a region spills only its own load),
    load_r − spill out of r − shortfall_r + spill into r ≤ capacity_r, and
    min_capacity_r ≤ capacity_r ≤ limit_r (a floor above the limit is cut to the limit).
    """
    n, m = network.n, len(network.edges)
    load, limit = _blocks(load, n, "load"), _blocks(limit, n, "limit")
    if load.shape != limit.shape:
        raise ValueError(f"load {load.shape} and limit {limit.shape} differ in shape")
    g = len(load)
    floor = np.minimum(network.min_capacity[None, :], limit)
    capacity = np.maximum(np.minimum(load, limit), floor)
    spill, shortfall = np.zeros((g, m)), np.clip(load - limit, 0, None)
    # Where spilling never pays, an hour within every limit is served at home: only hours
    # with overflow need the LP.
    need = np.ones(g, bool) if network.spill_can_pay else (shortfall > TOLERANCE).any(axis=1)
    if need.any():
        out, into = _incidence(network)
        eye = sp.identity(n, format="csr")
        # Variables per hour: [capacity (n), spill (m), shortfall (n)].
        block = sp.vstack(
            [
                sp.hstack([sp.csr_matrix((n, n)), out, eye]),  # out + shortfall <= load
                sp.hstack([-eye, into - out, -eye]),  # load - out - shortfall + in <= capacity
            ],
            format="csr",
        )
        c = np.concatenate([network.serving_cost, network.edge_cost, np.full(n, network.shortfall_cost)])
        k = int(need.sum())
        lower = np.hstack([floor[need], np.zeros((k, m + n))])
        upper = np.hstack([limit[need], np.full((k, m), np.inf), load[need]])
        x = _solve_blocks(block, c, np.hstack([load[need], -load[need]]), lower, upper)
        capacity[need] = np.clip(x[:, :n], floor[need], limit[need])
        spill[need] = np.clip(x[:, n : n + m], 0, None)
        shortfall[need] = np.clip(x[:, n + m :], 0, None)
    return _costed(capacity, spill, shortfall, network)


def serve_demand(capacity: np.ndarray, demand: np.ndarray, network: Network = NETWORK) -> Plan:
    """Route realised ``demand`` onto fixed ``capacity`` (both (G, n)) at least cost: the backtest.

    Where a region runs out, its overflow spills to a neighbour's spare capacity; what no
    neighbour can take is shortfall. ``cost`` includes the capacity's own serving cost.
    """
    n, m = network.n, len(network.edges)
    capacity, demand = _blocks(capacity, n, "capacity"), _blocks(demand, n, "demand")
    if capacity.shape != demand.shape:
        raise ValueError(f"capacity {capacity.shape} and demand {demand.shape} differ in shape")
    g = len(demand)
    spill, shortfall = np.zeros((g, m)), np.clip(demand - capacity, 0, None)
    need = (shortfall > TOLERANCE).any(axis=1)  # other hours serve every viewer at home
    if need.any():
        out, into = _incidence(network)
        eye = sp.identity(n, format="csr")
        # Variables per hour: [spill (m), shortfall (n)].
        block = sp.vstack([sp.hstack([out, eye]), sp.hstack([into - out, -eye])], format="csr")
        c = np.concatenate([network.edge_cost, np.full(n, network.shortfall_cost)])
        d, a = demand[need], capacity[need]
        k = len(d)
        upper = np.hstack([np.full((k, m), np.inf), d])
        x = _solve_blocks(block, c, np.hstack([d, a - d]), np.zeros((k, m + n)), upper)
        spill[need] = np.clip(x[:, :m], 0, None)
        shortfall[need] = np.clip(x[:, m:], 0, None)
    return _costed(capacity, spill, shortfall, network)


# --- frames of (region, origin, target) rows ---------------------------------------------


@dataclass(frozen=True)
class HourBlocks:
    """Rows of a frame laid out as (G hours, n regions) blocks; an hour is (origin, target)."""

    hour: np.ndarray  # (rows,) block of each row
    region: np.ndarray  # (rows,) region index of each row
    n_hours: int
    n_regions: int

    @classmethod
    def of(
        cls, region: np.ndarray, origin: np.ndarray, target: np.ndarray, network: Network = NETWORK
    ) -> HourBlocks:
        """Blocks keyed by (origin, target): plans made at different origins never share capacity."""
        keys = np.column_stack([np.asarray(origin, dtype="int64"), np.asarray(target, dtype="int64")])
        if len(keys) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, network.n)
        _, hour = np.unique(keys, axis=0, return_inverse=True)
        hour = hour.reshape(-1)
        return cls(hour, network.index(np.asarray(region)), int(hour.max()) + 1, network.n)

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Per-row values as (G, n); a region without a row in an hour gets 0 (no load, no capacity)."""
        blocks = np.zeros((self.n_hours, self.n_regions))
        blocks[self.hour, self.region] = np.asarray(values, dtype="float64")
        return blocks

    def gather(self, blocks: np.ndarray) -> np.ndarray:
        """(G, n) values back onto the rows."""
        return blocks[self.hour, self.region]


@dataclass(frozen=True)
class Backtest:
    """Per-row outcome of serving realised demand on a plan's capacity."""

    shortfall: np.ndarray  # viewers of the row's region left unserved
    cost: np.ndarray  # the region's serving cost + spill-over it sent + shortfall penalty


_CACHE: dict[str, Backtest] = {}
_CACHE_SIZE = 32  # the gate evaluates ~15 row sets (roles × slices) twice: train, then gate


def backtest_rows(
    region: np.ndarray,
    origin: np.ndarray,
    target: np.ndarray,
    capacity: np.ndarray,
    demand: np.ndarray,
    network: Network = NETWORK,
) -> Backtest:
    """Serve each row's realised demand on the capacity planned for its (origin, target) hour.

    Memoised on the inputs: the gate asks for several metrics and bootstrap chunks of the
    same rows, and the coupled LP is the expensive part.
    """
    capacity = np.clip(np.nan_to_num(np.asarray(capacity, dtype="float64")), 0, None)
    demand = np.clip(np.nan_to_num(np.asarray(demand, dtype="float64")), 0, None)
    digest = hashlib.sha256()
    for part in (origin, target, capacity, demand):
        digest.update(np.ascontiguousarray(np.asarray(part, dtype="float64")).tobytes())
    digest.update("|".join(map(str, region)).encode())
    digest.update(repr((network.regions, network.edges.tolist(), network.edge_cost.tolist())).encode())
    digest.update(repr((network.serving_cost.tolist(), network.shortfall_cost)).encode())
    key = digest.hexdigest()
    if key not in _CACHE:
        blocks = HourBlocks.of(region, origin, target, network)
        served = serve_demand(blocks.spread(capacity), blocks.spread(demand), network)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = Backtest(blocks.gather(served.shortfall), blocks.gather(served.cost))
    return _CACHE[key]
