"""Reference for tests/test_index.cpp, written into argv[1] by Python's FAISS:

- python_ivfpq.faiss: faiss.index_factory(32, "L2norm,IVF8,PQ8x6", METRIC_INNER_PRODUCT),
  trained on and holding features.pt's "gallery", nprobe 3;
- python_ivfsq.faiss: "L2norm,IVF8,SQ6" likewise, nprobe 3;
- python_hnsw.faiss: "L2norm,HNSW16" over the same gallery;
- expected.pt: each index's search of features.pt's "queries" (k 7): <name>_scores and
  <name>_indices for ivfpq, ivfsq and hnsw;
- sq_fp16.faiss: "L2norm,IVF8,SQfp16" (a scalar quantizer that a gallery index refuses);
- plain_flat.faiss: an IndexFlatIP without the L2 normalisation (a gallery index refuses it);
- l2_metric.faiss: "L2norm,Flat" with the L2 metric (refused too).
"""
import os
import sys

import faiss
import numpy as np
import torch


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261203)
    centres = rng.standard_normal((30, 32)).astype(np.float32)
    gallery = (centres[rng.integers(0, 30, 600)] + 0.5 * rng.standard_normal((600, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 30, 25)] + 0.5 * rng.standard_normal((25, 32))).astype(np.float32)
    torch.save({"gallery": torch.from_numpy(gallery), "queries": torch.from_numpy(queries)},
               os.path.join(out, "features.pt"))
    expected = {}
    for name, factory in (("ivfpq", "L2norm,IVF8,PQ8x6"), ("ivfsq", "L2norm,IVF8,SQ6"),
                          ("hnsw", "L2norm,HNSW16")):
        index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
        index.add(gallery)
        if name.startswith("ivf"):
            faiss.extract_index_ivf(index).nprobe = 3
        scores, indices = index.search(queries, 7)
        expected[name + "_scores"] = torch.from_numpy(scores)
        expected[name + "_indices"] = torch.from_numpy(indices)
        faiss.write_index(index, os.path.join(out, "python_" + name + ".faiss"))
    torch.save(expected, os.path.join(out, "expected.pt"))
    plain = faiss.IndexFlatIP(32)
    plain.add(gallery)
    faiss.write_index(plain, os.path.join(out, "plain_flat.faiss"))
    fp16 = faiss.index_factory(32, "L2norm,IVF8,SQfp16", faiss.METRIC_INNER_PRODUCT)
    fp16.train(gallery)
    fp16.add(gallery)
    faiss.write_index(fp16, os.path.join(out, "sq_fp16.faiss"))
    l2 = faiss.index_factory(32, "L2norm,Flat", faiss.METRIC_L2)
    l2.add(gallery)
    faiss.write_index(l2, os.path.join(out, "l2_metric.faiss"))


if __name__ == "__main__":
    main()
