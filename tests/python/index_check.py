"""Reads a gallery index that reidnet wrote with Python's FAISS and searches with it:
index_check.py INDEX QUERIES.pt K OUT.pt. QUERIES.pt holds {"queries": [n, d] float32};
OUT.pt gets {"scores", "indices", "ntotal", "d"} from faiss.read_index(INDEX).search."""
import sys

import faiss
import torch


def main():
    index_path, queries_path, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    index = faiss.read_index(index_path)
    queries = torch.load(queries_path)["queries"].numpy()
    scores, indices = index.search(queries, k)
    torch.save({"scores": torch.from_numpy(scores), "indices": torch.from_numpy(indices),
                "ntotal": torch.tensor([index.ntotal]), "d": torch.tensor([index.d])}, out)


if __name__ == "__main__":
    main()
