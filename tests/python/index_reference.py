"""Reference for tests/test_index.cpp, written into argv[1] by Python's FAISS:

- python_ivfpq.faiss: faiss.index_factory(32, "L2norm,IVF8,PQ8x6", METRIC_INNER_PRODUCT),
  trained on and holding features.pt's "gallery", nprobe 3;
- python_ivfsq.faiss: "L2norm,IVF8,SQ6" likewise, nprobe 3;
- python_hnsw.faiss: "L2norm,HNSW16" over the same gallery;
- expected.pt: each index's search of features.pt's "queries" (k 7): <name>_scores and
  <name>_indices for ivfpq, ivfsq and hnsw;
- sq_fp16.faiss: "L2norm,IVF8,SQfp16" (a scalar quantizer that a gallery index refuses);
- plain_flat.faiss: an IndexFlatIP without the L2 normalisation (a gallery index refuses it);
- l2_metric.faiss: "L2norm,Flat" with the L2 metric (refused too);
- hostile_<case>.faiss: files that FAISS itself reads, each with one structure a gallery index
  refuses (see HOSTILE below: sub-indexes of another kind or dimension, HNSW fields that add
  or search would follow out of bounds, stored search parameters past the flags' caps, and
  on-disk inverted lists naming hostile_ondisk.ivfdata, which must never be opened).
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
    hostile_files(out, gallery.copy())


def normalised(index):
    """index behind an L2 normalisation, as a gallery index file has it."""
    chain = faiss.IndexPreTransform(faiss.NormalizationTransform(index.d, 2.0), index)
    chain.own_fields = False
    chain.keep = index  # the Python wrapper must outlive the chain
    return chain


def hostile_files(out, gallery):
    """Writes hostile_<case>.faiss into out; returns nothing."""
    d = gallery.shape[1]
    faiss.normalize_L2(gallery)

    def ivf(nlist=8):
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
        index.add(gallery)
        index.nprobe = 3
        return index

    def hnsw():
        index = faiss.IndexHNSWFlat(d, 8, faiss.METRIC_INNER_PRODUCT)
        index.add(gallery)
        return index

    def write(name, index):
        faiss.write_index(normalised(index), os.path.join(out, "hostile_" + name + ".faiss"))

    index = ivf()  # a coarse quantizer that maps ids (FAISS's IndexIDMap)
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    mapped = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    mapped.add_with_ids(centroids, np.arange(index.nlist, dtype=np.int64))
    index.quantizer, index.keep = mapped, mapped
    write("idmap_quantizer", index)

    index = ivf()  # a coarse quantizer of another dimension
    narrow = faiss.IndexFlatIP(d // 2)
    narrow.add(np.ascontiguousarray(centroids[:, : d // 2]))
    index.quantizer, index.keep = narrow, narrow
    write("narrow_quantizer", index)

    index = ivf()
    index.nprobe = 10**9
    write("ivf_nprobe", index)

    index = ivf()  # on-disk inverted lists
    lists = faiss.OnDiskInvertedLists(index.nlist, index.code_size,
                                      os.path.join(out, "hostile_ondisk.ivfdata"))
    index.replace_invlists(lists, False)
    index.keep = lists
    index.add(gallery)
    write("ondisk", index)

    index = hnsw()  # a storage of another dimension
    narrow = faiss.IndexFlatIP(d // 2)
    narrow.add(np.ascontiguousarray(gallery[:, : d // 2]))
    index.storage, index.keep, index.own_fields = narrow, narrow, False
    write("narrow_storage", index)

    index = hnsw()  # a storage that is itself an HNSW
    inner = hnsw()
    index.storage, index.keep, index.own_fields = inner, inner, False
    write("hnsw_storage", index)

    index = hnsw()  # link counts (and probabilities) for fewer levels than the pictures have
    cum = faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level)
    faiss.copy_array_to_vector(cum[:2], index.hnsw.cum_nneighbor_per_level)
    probas = faiss.vector_to_array(index.hnsw.assign_probas)
    faiss.copy_array_to_vector(probas[:1], index.hnsw.assign_probas)
    write("cum_levels", index)

    index = hnsw()  # a level probability table longer than the link counts
    probas = faiss.vector_to_array(index.hnsw.assign_probas)
    faiss.copy_array_to_vector(np.concatenate([probas, probas]), index.hnsw.assign_probas)
    write("assign_probas", index)

    # The HNSW fields just before the storage (efSearch, then the upper beam, which newer FAISS
    # no longer keeps but still reads), patched in the file: the storage is a flat index of
    # 4 + 33 + 8 + 4 n d bytes at the file's end.
    write("plain_hnsw", hnsw())
    plain = os.path.join(out, "hostile_plain_hnsw.faiss")
    with open(plain, "rb") as f:
        data = bytearray(f.read())
    os.remove(plain)
    storage = len(data) - (4 + 33 + 8 + 4 * gallery.size)
    for name, back, value in (("upper_beam_negative", 4, -1), ("upper_beam_huge", 4, 2**30),
                              ("ef_search_huge", 8, 10**8), ("ef_search_max", 8, 2**31 - 1)):
        patched = bytearray(data)
        patched[storage - back:storage - back + 4] = np.int32(value).tobytes()
        with open(os.path.join(out, "hostile_" + name + ".faiss"), "wb") as f:
            f.write(patched)

    # A level-1 link of a picture that has two levels, redirected to a picture with only one.
    index = hnsw()
    graph = index.hnsw
    levels = faiss.vector_to_array(graph.levels)
    offsets = faiss.vector_to_array(graph.offsets)
    cum = faiss.vector_to_array(graph.cum_nneighbor_per_level)
    links = faiss.vector_to_array(graph.neighbors)
    upper = int(np.flatnonzero(levels >= 2)[0])
    lower = int(np.flatnonzero(levels == 1)[0])
    links[int(offsets[upper]) + int(cum[1])] = lower
    faiss.copy_array_to_vector(links, graph.neighbors)
    write("link_level", index)


if __name__ == "__main__":
    main()
