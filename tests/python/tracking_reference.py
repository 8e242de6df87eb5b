"""Reference for tests/test_tracking.cpp, written into argv[1]:

- assignments.pt: score matrices (square, wider, taller, with negative entries, and the
  cosine similarities of random features) and, for each, the rows' columns in the assignment
  of largest total that scipy.optimize.linear_sum_assignment(maximize=True) finds (-1 for a
  row left without a column), as int64, and that total.
"""
import os
import sys

import numpy as np
import scipy.optimize
import torch


def best_assignment(scores):
    rows, columns = scipy.optimize.linear_sum_assignment(scores, maximize=True)
    assigned = np.full(scores.shape[0], -1, dtype=np.int64)
    assigned[rows] = columns
    return assigned, float(scores[rows, columns].sum())


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261207)
    cases = {
        "square": rng.uniform(0, 1, (9, 9)),
        "wide": rng.uniform(0, 1, (5, 8)),
        "tall": rng.uniform(0, 1, (8, 5)),
        "negative": rng.uniform(-1, 1, (7, 6)),
    }
    features = rng.normal(size=(13, 32))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    cases["cosine"] = features[:6] @ features[6:].T
    tensors = {}
    for name, scores in cases.items():
        assigned, total = best_assignment(scores)
        tensors[name + "_scores"] = torch.from_numpy(scores)
        tensors[name + "_assigned"] = torch.from_numpy(assigned)
        tensors[name + "_total"] = torch.tensor(total, dtype=torch.float64)
    torch.save(tensors, os.path.join(out, "assignments.pt"))


if __name__ == "__main__":
    main()
