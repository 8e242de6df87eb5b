"""NumPy reference of the Market-1501 evaluation protocol and k-reciprocal re-ranking
written from the Python baseline's behaviour, and the fixture writer of
tests/test_evaluate.cpp.

Run as `python3 evaluate_reference.py <folder>`: writes <folder>/evaluate.pt, a plain dict of
tensors (torch.save) that torch::pickle_load reads. The functions are also imported by the
benchmarks (benchmarks/evaluate_reference.py, benchmarks/re_ranking_reference.py).

Protocol, per query (the baseline's evaluate.py / compute_mAP):
- order = gallery indices by descending score. The baseline uses np.argsort(score)[::-1], whose
  order among equal scores is unspecified; reidnet fixes it to gallery order (a stable sort by
  descending score), which `stable=True` reproduces. `stable=False` is the baseline's exact code
  (used by the benchmark for timing).
- good = same id and different camera; junk = same id and same camera, plus id -1. A gallery
  image with id -1 is junk even for a query whose id is -1 (junk wins; the baseline would crash).
- junk is removed from the order, then rows_good = the positions of the good images.
- CMC[k] = 1 for k >= rows_good[0]; trapezoid AP: sum_i (old_precision_i + precision_i) / 2 / ngood
  with precision_i = (i+1)/(r_i+1), old_precision_i = i/r_i (1 when r_i = 0); plain AP: the mean
  of precision_i; INP = ngood / (r_last + 1).
- a query without a good image adds 0 to CMC and AP and still counts in the denominators.
"""
import os
import sys

import numpy as np


# ------------------------------------------------------------------------------------------
# Evaluation
def evaluate_query(score, ql, qc, gl, gc, stable=True, descending=True):
    """(trapezoid AP, plain AP, INP or None, cmc int array [len(gl)], first-hit rank or -1)."""
    if descending:
        order = np.argsort(-score, kind="stable") if stable else np.argsort(score)[::-1]
    else:
        order = np.argsort(score, kind="stable") if stable else np.argsort(score)
    query_index = np.argwhere(gl == ql)
    camera_index = np.argwhere(gc == qc)
    junk_minus_one = np.argwhere(gl == -1)
    good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
    good_index = np.setdiff1d(good_index, junk_minus_one)
    junk_index = np.append(np.intersect1d(query_index, camera_index), junk_minus_one)

    cmc = np.zeros(len(gl), dtype=np.int64)
    if good_index.size == 0:
        return 0.0, 0.0, None, cmc, -1
    order = order[np.isin(order, junk_index, invert=True)]
    rows_good = np.argwhere(np.isin(order, good_index)).flatten()
    ngood = len(good_index)
    cmc[rows_good[0]:] = 1
    ap = 0.0
    plain = 0.0
    for i in range(ngood):
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        old_precision = i * 1.0 / rows_good[i] if rows_good[i] != 0 else 1.0
        ap += (old_precision + precision) / 2 / ngood
        plain += precision / ngood
    inp = ngood / (rows_good[-1] + 1.0)
    return ap, plain, inp, cmc, int(rows_good[0])


def evaluate_scores(scores, ql, qc, gl, gc, stable=True, descending=True):
    """All queries of a [Nq, Ng] score matrix: dict of cmc, ap, plain_ap, inp, first_hit, mAP."""
    nq = scores.shape[0]
    cmc = np.zeros(len(gl), dtype=np.int64)
    ap = np.zeros(nq)
    plain = np.zeros(nq)
    inp = np.full(nq, np.nan)
    first = np.full(nq, -1, dtype=np.int64)
    for i in range(nq):
        ap[i], plain[i], q_inp, q_cmc, first[i] = evaluate_query(
            scores[i], ql[i], qc[i], gl, gc, stable, descending)
        cmc += q_cmc
        if q_inp is not None:
            inp[i] = q_inp
    valid = ~np.isnan(inp)
    return {
        "cmc": cmc / float(nq),
        "ap": ap,
        "plain_ap": plain,
        "first_hit": first,
        "mAP": ap.mean(),
        "plain_mAP": plain.mean(),
        "mINP": inp[valid].mean() if valid.any() else 0.0,
    }


def evaluate_features(qf, ql, qc, gf, gl, gc, stable=True):
    """The baseline's loop: score = gf . q per query (float32), then evaluate_query."""
    nq = qf.shape[0]
    cmc = np.zeros(len(gl), dtype=np.int64)
    ap = 0.0
    for i in range(nq):
        score = np.dot(gf, qf[i])
        q_ap, _, _, q_cmc, _ = evaluate_query(score, ql[i], qc[i], gl, gc, stable)
        cmc += q_cmc
        ap += q_ap
    return cmc / float(nq), ap / nq


# ------------------------------------------------------------------------------------------
# k-reciprocal re-ranking (Zhong et al. 2017) as the baseline's re_ranking.py computes it:
# inputs are dot-product similarities of L2-normalised features; the distance is
# (2 - 2 s)^2 in float32, each row (= column of the symmetric matrix) divided by its max.
def k_reciprocal_neighbours(initial_rank, i, k):
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """Re-ranked distance [Nq, Ng] (lower is better)."""
    nq = q_g.shape[0]
    similarity = np.concatenate([np.concatenate([q_q, q_g], axis=1),
                                 np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    dist = np.power(2. - 2 * similarity, 2).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    n = dist.shape[0]
    # Positions 0..k1 of each row hold its k1+1 nearest, sorted (the baseline's "top K1+1").
    initial_rank = np.argpartition(dist, range(1, k1 + 1))
    half = int(np.around(k1 / 2))

    V = np.zeros_like(dist, dtype=np.float32)
    for i in range(n):
        reciprocal = k_reciprocal_neighbours(initial_rank, i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = k_reciprocal_neighbours(initial_rank, candidate, half)
            if len(np.intersect1d(candidate_set, reciprocal)) > 2. / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)

    query_dist = dist[:nq]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(n):
            V_qe[i] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inverted = [np.where(V[:, k] != 0)[0] for k in range(n)]

    jaccard = np.zeros_like(query_dist, dtype=np.float32)
    for i in range(nq):
        temp_min = np.zeros(n, dtype=np.float32)
        for k in np.where(V[i] != 0)[0]:
            rows = inverted[k]
            temp_min[rows] = temp_min[rows] + np.minimum(V[i, k], V[rows, k])
        jaccard[i] = 1 - temp_min / (2. - temp_min)
    final = jaccard * (1 - lambda_value) + query_dist * lambda_value
    return final[:, nq:]


# ------------------------------------------------------------------------------------------
# Synthetic data
def synthetic_market(rng, num_query, num_gallery, dim, num_ids, num_cameras, noise=1.0,
                     distractor_fraction=0.14, junk_fraction=0.19):
    """Identity clusters on the unit sphere; the gallery also holds distractors (id 0) and
    junk detections (id -1). Features are L2-normalised float32, labels/cameras int64."""
    centers = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)
    ql = rng.integers(1, num_ids + 1, num_query)
    qc = rng.integers(1, num_cameras + 1, num_query)
    gl = rng.integers(1, num_ids + 1, num_gallery)
    kind = rng.random(num_gallery)
    gl[kind < distractor_fraction] = 0
    gl[(kind >= distractor_fraction) & (kind < distractor_fraction + junk_fraction)] = -1
    gc = rng.integers(1, num_cameras + 1, num_gallery)

    def features(labels):
        f = centers[np.maximum(labels, 0)] * (labels > 0)[:, None]
        f = f + noise * rng.standard_normal(f.shape).astype(np.float32)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)

    return features(ql), ql, qc, features(gl), gl, gc


def integer_ties(rng, num_query, num_gallery, dim, num_ids, num_cameras):
    """Small-integer features: every dot product is exact in float32 and ties are frequent."""
    qf = rng.integers(-2, 3, (num_query, dim)).astype(np.float32)
    gf = rng.integers(-2, 3, (num_gallery, dim)).astype(np.float32)
    ql = rng.integers(1, num_ids + 1, num_query)
    gl = rng.integers(-1, num_ids + 1, num_gallery)
    qc = rng.integers(1, num_cameras + 1, num_query)
    gc = rng.integers(1, num_cameras + 1, num_gallery)
    return qf, ql, qc, gf, gl, gc


def main():
    import torch

    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261126)
    tensors = {}

    def put(prefix, **arrays):
        for name, value in arrays.items():
            tensors[f"{prefix}/{name}"] = torch.from_numpy(np.ascontiguousarray(value))

    def put_result(prefix, result):
        put(prefix, cmc=result["cmc"], ap=result["ap"], plain_ap=result["plain_ap"],
            first_hit=result["first_hit"],
            summary=np.array([result["mAP"], result["plain_mAP"], result["mINP"]]))

    # Ties everywhere: exact float32 scores, stable order decides.
    qf, ql, qc, gf, gl, gc = integer_ties(rng, 40, 300, 6, 12, 3)
    put("ties", qf=qf, ql=ql, qc=qc, gf=gf, gl=gl, gc=gc)
    put_result("ties", evaluate_scores(qf @ gf.T, ql, qc, gl, gc))

    # Market-like random features; the score matrix is saved so the comparison is exact.
    qf, ql, qc, gf, gl, gc = synthetic_market(rng, 200, 1500, 32, 60, 6)
    scores = np.dot(qf, gf.T)
    put("random", qf=qf, ql=ql, qc=qc, gf=gf, gl=gl, gc=gc, scores=scores)
    put_result("random", evaluate_scores(scores, ql, qc, gl, gc))

    # Re-ranking on normalised features; similarities as the baseline computes them.
    qf, ql, qc, gf, gl, gc = synthetic_market(rng, 60, 400, 16, 20, 6, noise=1.5)
    q_g, q_q, g_g = np.dot(qf, gf.T), np.dot(qf, qf.T), np.dot(gf, gf.T)
    put("rerank", qf=qf, ql=ql, qc=qc, gf=gf, gl=gl, gc=gc, q_g=q_g, q_q=q_q, g_g=g_g)
    for k1, k2, lam in [(20, 6, 0.3), (7, 1, 0.5), (5, 3, 0.0)]:
        final = re_ranking(q_g, q_q, g_g, k1, k2, lam)
        tag = f"rerank/k1={k1}/k2={k2}/lambda={lam}"
        put(tag, final=final)
        put_result(tag, evaluate_scores(final, ql, qc, gl, gc, descending=False))

    torch.save(tensors, os.path.join(out_dir, "evaluate.pt"))


if __name__ == "__main__":
    main()
