"""Reference for tests/test_mat.cpp, written into argv[1] with scipy.io.savemat as the
Python baseline's test.py writes its files:

- pytorch_result.mat: gallery_f, gallery_label, gallery_cam, query_f, query_label, query_cam
  (features as float32 arrays, labels and cameras as Python lists: 1 x N int64 rows);
- multi_query.mat: mquery_f, mquery_label, mquery_cam;
- compressed.mat: pytorch_result.mat's arrays with do_compression=True, labels and cameras
  as float64 columns (as MATLAB users often save them);
- arrays.pt: every array above as a tensor (torch.save), for comparison;
- baseline_line.txt: the line evaluate_gpu.py prints for pytorch_result.mat (the protocol of
  evaluate_reference.py, scores computed as the baseline does).
"""
import os
import sys

import numpy as np
import scipy.io
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_reference import evaluate_features, synthetic_market  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261202)
    qf, ql, qc, gf, gl, gc = synthetic_market(rng, 40, 300, 32, 25, 6, noise=0.9)
    result = {"gallery_f": gf, "gallery_label": [int(v) for v in gl],
              "gallery_cam": [int(v) for v in gc], "query_f": qf,
              "query_label": [int(v) for v in ql], "query_cam": [int(v) for v in qc]}
    scipy.io.savemat(os.path.join(out, "pytorch_result.mat"), result)
    mf, ml, mc, _, _, _ = synthetic_market(rng, 60, 1, 32, 25, 6)
    scipy.io.savemat(os.path.join(out, "multi_query.mat"),
                     {"mquery_f": mf, "mquery_label": [int(v) for v in ml],
                      "mquery_cam": [int(v) for v in mc]})
    compressed = dict(result)
    for name in ("gallery_label", "gallery_cam", "query_label", "query_cam"):
        compressed[name] = np.asarray(result[name], dtype=np.float64).reshape(-1, 1)
    scipy.io.savemat(os.path.join(out, "compressed.mat"), compressed, do_compression=True)
    arrays = {"gallery_f": gf, "gallery_label": gl, "gallery_cam": gc, "query_f": qf,
              "query_label": ql, "query_cam": qc, "mquery_f": mf, "mquery_label": ml,
              "mquery_cam": mc}
    torch.save({name: torch.from_numpy(np.ascontiguousarray(value)).clone()
                for name, value in arrays.items()}, os.path.join(out, "arrays.pt"))
    cmc, mean_ap = evaluate_features(qf, ql, qc, gf, gl, gc)
    with open(os.path.join(out, "baseline_line.txt"), "w") as f:
        f.write("Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f\n" % (cmc[0], cmc[4], cmc[9], mean_ap))


if __name__ == "__main__":
    main()
