"""Checks a .npy file that reidnet's write_npy wrote: numpy.load reads it (without pickle) as a
float32 C-order matrix of the given shape holding arange(rows * columns) / 8.

    python3 embed_npy_check.py rows.npy ROWS COLUMNS
"""
import sys

import numpy as np


def main():
    path, rows, columns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    array = np.load(path, allow_pickle=False)
    expected = np.arange(rows * columns, dtype=np.float32).reshape(rows, columns) / 8
    if array.dtype != np.float32 or not array.flags["C_CONTIGUOUS"] or array.shape != expected.shape:
        sys.exit(f"{path}: {array.dtype} {array.shape}; expected float32 {expected.shape}")
    if not np.array_equal(array, expected):
        sys.exit(f"{path}: values differ")
    print(f"{path}: numpy reads float32 {array.shape}")


if __name__ == "__main__":
    main()
