"""Reads a pytorch_result.mat (or multi_query.mat) that reidnet wrote, as the Python
baseline's evaluate_gpu.py reads it (scipy.io.loadmat), and checks it against the tensors
reidnet saved beside it:

    python3 mat_check.py FILE.mat [--arrays ARRAYS.pt] [--protocol]

With --arrays, every array of ARRAYS.pt must be in FILE.mat with the same dtype and values
(a 1-D tensor as a 1 x N row, as savemat writes the baseline's lists); exit status 1 when one
does not. With --protocol it then prints the line evaluate_gpu.py prints (Rank@1, Rank@5,
Rank@10, mAP), from the file's arrays alone, with the protocol of evaluate_reference.py.
"""
import argparse
import os
import sys

import numpy as np
import scipy.io
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_reference import evaluate_scores  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mat")
    parser.add_argument("--arrays")
    parser.add_argument("--protocol", action="store_true")
    args = parser.parse_args()
    mat = scipy.io.loadmat(args.mat)
    expected = torch.load(args.arrays) if args.arrays else {}
    ok = True
    for name, tensor in expected.items():
        want = tensor.numpy()
        have = mat.get(name)
        if have is None:
            print(f"{name}: missing from {args.mat}")
            ok = False
            continue
        if want.ndim == 1:
            want = want.reshape(1, -1)  # savemat's oned_as="row", as the baseline's lists
        if have.shape != want.shape or have.dtype != want.dtype or not np.array_equal(have, want):
            print(f"{name}: {have.dtype} {have.shape} in the file, {want.dtype} {want.shape} expected"
                  f" (values equal: {have.shape == want.shape and np.array_equal(have, want)})")
            ok = False
    if not ok:
        return 1
    if args.protocol:
        # evaluate_gpu.py's reading: features as they are, labels and cameras from row 0. The
        # scores are query x gallery products in LibTorch (Debian's python3-torch runs the
        # library reidnet links), so that near-ties of a poorly trained model round alike.
        # loadmat's arrays are column-major: made row-major first, as reidnet's are, so that
        # the product runs the same kernel.
        query = torch.from_numpy(np.ascontiguousarray(mat["query_f"]))
        gallery = torch.from_numpy(np.ascontiguousarray(mat["gallery_f"]))
        scores = (query @ gallery.t()).numpy()
        result = evaluate_scores(scores, mat["query_label"][0], mat["query_cam"][0],
                                 mat["gallery_label"][0], mat["gallery_cam"][0])
        cmc = result["cmc"]
        print("Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f" % (cmc[0], cmc[4], cmc[9], result["mAP"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
