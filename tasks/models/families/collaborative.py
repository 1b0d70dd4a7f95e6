"""Collaborative filtering on a sparse user × item matrix: item-item co-occurrence and truncated SVD.

Pure numpy/scipy, deterministic for a given matrix and seed, no database access. Both models
are fitted on one interaction matrix (rows users, columns items) and score rows of it; they
know only the items that are columns of that matrix, so a caller that builds the matrix from
interactions before a cut-off can never get an item first seen after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController


def interaction_matrix(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR matrix of summed weights per (row, col), log1p-damped so heavy repeaters do not dominate."""
    matrix = sp.coo_matrix(
        (np.asarray(weights, dtype="float64"), (np.asarray(rows), np.asarray(cols))), shape=shape
    ).tocsr()
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)
    matrix.eliminate_zeros()
    return matrix


def _top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries (ties: lower column index first)."""
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    keep = np.zeros(len(data), dtype=bool)
    for r in range(matrix.shape[0]):
        a, b = indptr[r], indptr[r + 1]
        if b - a <= k:
            keep[a:b] = True
            continue
        order = np.lexsort((indices[a:b], -data[a:b]))[:k]
        keep[a + order] = True
    row_ids = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))
    return sp.csr_matrix((data[keep], (row_ids[keep], indices[keep])), shape=matrix.shape)


@dataclass
class ItemCooccurrence:
    """Item-item cosine similarity of co-occurrence columns, pruned to each item's nearest neighbours."""

    neighbours: int = 50
    similarity: sp.csr_matrix | None = None

    def fit(self, matrix: sp.csr_matrix) -> ItemCooccurrence:
        """Cosine similarity between item columns; an item is not its own neighbour."""
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
        scale = sp.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0))
        normed = (matrix @ scale).tocsc()
        sim = (normed.T @ normed).tocsr()
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self.similarity = _top_per_row(sim, self.neighbours)
        return self

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Dense (users, items) scores: each user's items' similarities, weighted by interaction."""
        if self.similarity is None:
            raise ValueError("ItemCooccurrence is not fitted")
        # Item-kNN: every item the user has passes its similarity on to its own nearest neighbours.
        return np.asarray((user_rows @ self.similarity).todense())


_CONTROLLER: list[ThreadpoolController] = []


def _blas() -> ThreadpoolController:
    """One controller per process: finding the loaded BLAS libraries costs ~50 ms a time."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def truncated_svd(
    matrix: sp.spmatrix, k: int, *, seed: int, n_iter: int = 4, oversample: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-k SVD (U, s, Vt) by a seeded randomized range finder (Halko et al.), exact when small."""
    # These are small dense products: BLAS threads only contend with each other (and with the
    # booster) on a shared machine, costing up to 40x, so they run on one thread.
    with _blas().limit(limits=1, user_api="blas"):
        return _randomized_svd(matrix, k, seed=seed, n_iter=n_iter, oversample=oversample)


def _randomized_svd(
    matrix: sp.spmatrix, k: int, *, seed: int, n_iter: int, oversample: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_rows, n_cols = matrix.shape
    k = max(1, min(k, n_rows, n_cols))
    if min(n_rows, n_cols) <= k + oversample:
        u, s, vt = np.linalg.svd(matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix))
        return _signed(u[:, :k], s[:k], vt[:k])
    rng = np.random.default_rng(seed)
    a = sp.csr_matrix(matrix)
    q, _ = np.linalg.qr(a @ rng.standard_normal((n_cols, k + oversample)))
    for _ in range(n_iter):  # power iterations sharpen the spectrum of a slowly decaying matrix
        z, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ z)
    b = np.asarray((a.T @ q).T)
    u_b, s, vt = np.linalg.svd(b, full_matrices=False)
    return _signed(q @ u_b[:, :k], s[:k], vt[:k])


def _signed(u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fix each singular pair's sign (largest |u| entry positive) so factors are reproducible."""
    if u.size == 0:
        return u, s, vt
    flip = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    flip[flip == 0] = 1.0
    return u * flip, s, vt * flip[:, None]


@dataclass
class MatrixFactorisation:
    """PureSVD: users and items in a k-dimensional latent space; score = reconstructed interaction."""

    factors: int = 24
    seed: int = 0
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None

    def fit(self, matrix: sp.csr_matrix) -> MatrixFactorisation:
        """Truncated SVD of the matrix; user factors carry the singular values."""
        if matrix.nnz == 0:
            self.user_factors = np.zeros((matrix.shape[0], 0))
            self.item_factors = np.zeros((matrix.shape[1], 0))
            return self
        u, s, vt = truncated_svd(matrix, self.factors, seed=self.seed)
        self.user_factors = u * s
        self.item_factors = vt.T
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """Dense (users, items) reconstructed scores for the given user rows."""
        if self.user_factors is None or self.item_factors is None:
            raise ValueError("MatrixFactorisation is not fitted")
        return np.asarray(self.user_factors[np.asarray(users, dtype=np.int64)] @ self.item_factors.T)


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the n best positive-score columns as (row, col, rank from 1); ties: lower column first."""
    n_cols = scores.shape[1]
    n = min(n, n_cols)
    if scores.size == 0 or n <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    mask = scores > 0
    if n < n_cols:
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        # argpartition breaks ties at the boundary arbitrarily: keep every column at least as
        # good as the n-th value, then order by (score desc, column asc) and cut at n.
        mask &= scores >= kth[:, None]
    rows, cols = np.nonzero(mask)
    values = scores[rows, cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts + 1
    keep = rank <= n
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64), rank[keep].astype(np.int64)
