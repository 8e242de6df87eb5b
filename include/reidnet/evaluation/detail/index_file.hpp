#pragma once
// The structure of a gallery index file, checked before FAISS reads a byte of it.
//
// FAISS's reader allocates what a file's sizes claim, follows sub-indexes of any type (an IVF
// whose coarse quantizer is another IVF, an HNSW whose storage has another dimension), opens
// the data file that on-disk inverted lists name, read-write, and searches with the graph
// links, levels and parameters it reads, unchecked. So reidnet walks the file first and
// accepts only the structures it writes itself (and that Python's FAISS writes for the same
// factory strings): an L2 normalisation in front of a flat, IVF-Flat, IVF-SQ, IVF-PQ or HNSW
// index with the inner-product metric, every sub-index flat and of the same dimension, every
// size within the bytes the file still holds, every list id and graph link within the index,
// every HNSW field that add and search read consistent, and stored search parameters within
// the programs' own caps. The walk keeps only the HNSW graph's arrays in memory (at most the
// file's size); features and codes are skipped.

#include <reidnet/core/detail/byte_source.hpp>
#include <reidnet/core/errors.hpp>

#include <c10/util/irange.h>
#include <fmt/format.h>

#include <faiss/impl/ScalarQuantizer.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::detail {

/// Stored or asked-for HNSW search and build candidates beyond this are refused.
inline constexpr int64_t kMaxEfSearch = int64_t{1} << 16;
/// Feature dimensions beyond this are refused in index files.
inline constexpr int64_t kMaxIndexDim = int64_t{1} << 16;

/// What the walk found: enough for the caller to name the index without FAISS.
struct IndexFileFacts {
  std::string type;  ///< FAISS's four-character code of the index behind the normalisation
  int64_t dim = 0;
  int64_t size = 0;
};

class IndexFileWalker {
 public:
  IndexFileWalker(const ByteSource& source, std::string path)
      : source_(source), path_(std::move(path)) {}

  IndexFileFacts walk() {
    const auto top = fourcc("the file's first tag");
    if (top != code("IxPT")) {
      throw InputError(fmt::format(
          "{}: not a gallery index: it does not start with FAISS's L2 normalisation (an index "
          "made by index_factory(d, \"L2norm,...\", METRIC_INNER_PRODUCT)); its first bytes are "
          "'{}'", path_, printable(top)));
    }
    const auto outer = index_header("the normalised index");
    if (read<int32_t>("the number of transforms") != 1) {
      fail("expected one L2 normalisation in front of the index");
    }
    if (fourcc("the transform") != code("VNrm") || read<float>("the transform's norm") != 2.0f) {
      fail("its transform is not an L2 normalisation");
    }
    const auto d_in = read<int32_t>("the transform's input dimension");
    const auto d_out = read<int32_t>("the transform's output dimension");
    read<uint8_t>("the transform's trained flag");
    if (d_in != outer.dim || d_out != outer.dim) fail("its transform and its index disagree on the dimension");
    IndexFileFacts facts{"", outer.dim, outer.size};
    const auto inner = fourcc("the index type");
    facts.type = printable(inner);
    if (inner == code("IxFI")) {
      flat_index("the index", outer);
    } else if (inner == code("IwFl") || inner == code("IwSq") || inner == code("IwSQ") ||
               inner == code("IwPQ")) {
      ivf_index(inner, outer);
    } else if (inner == code("IHNf")) {
      hnsw_index(outer);
    } else {
      fail(fmt::format("an index of FAISS type '{}'; gallery indexes are flat, IVF-Flat, IVF-SQ, "
                       "IVF-PQ or HNSW (types IxFI, IwFl, IwSq, IwPQ, IHNf)", facts.type));
    }
    if (at_ != source_.size()) {
      fail(fmt::format("{} bytes follow the index", source_.size() - at_));
    }
    return facts;
  }

 private:
  struct Header {
    int64_t dim = 0;
    int64_t size = 0;
  };

  static uint32_t code(const char (&text)[5]) {
    return uint32_t(uint8_t(text[0])) | uint32_t(uint8_t(text[1])) << 8 |
           uint32_t(uint8_t(text[2])) << 16 | uint32_t(uint8_t(text[3])) << 24;
  }

  static std::string printable(uint32_t tag) {
    std::string text;
    for (const auto i : c10::irange(4)) {
      const auto c = static_cast<char>((tag >> (8 * i)) & 0xff);
      text += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return text;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(fmt::format("{}: not a valid gallery index: {}", path_, what));
  }

  template <typename T>
  T read(const char* what) {
    T value{};
    if (at_ > source_.size() || sizeof(T) > source_.size() - at_) {
      fail(fmt::format("the file ends inside {} (byte {})", what, at_));
    }
    source_.read(at_, &value, sizeof(T));
    at_ += sizeof(T);
    return value;
  }

  uint32_t fourcc(const char* what) { return read<uint32_t>(what); }

  // A FAISS vector's element count, refused unless that many elements of `element_bytes`
  // fit in the rest of the file.
  uint64_t count(const char* what, uint64_t element_bytes) {
    const auto n = read<uint64_t>(what);
    if (n > (source_.size() - at_) / element_bytes) {
      fail(fmt::format("{} claims {} entries of {} bytes, more than the {} bytes left in the file",
                       what, n, element_bytes, source_.size() - at_));
    }
    return n;
  }

  void skip(uint64_t bytes, const char* what) {
    if (bytes > source_.size() - at_) fail(fmt::format("the file ends inside {}", what));
    at_ += bytes;
  }

  template <typename T>
  std::vector<T> vector(const char* what) {
    const auto n = count(what, sizeof(T));
    std::vector<T> values(static_cast<size_t>(n));
    if (n > 0) source_.read(at_, values.data(), n * sizeof(T));
    at_ += n * sizeof(T);
    return values;
  }

  // FAISS's index header: dimension, size, two unused words, trained flag, metric.
  Header index_header(const char* what) {
    Header header;
    header.dim = read<int32_t>(what);
    header.size = read<int64_t>(what);
    read<int64_t>(what);
    read<int64_t>(what);
    read<uint8_t>(what);
    const auto metric = read<int32_t>(what);
    if (metric > 1) read<float>(what);  // the metric's argument
    if (metric != 0) fail(fmt::format("the metric of {} is not the inner product (cosine similarity)", what));
    if (header.dim < 1 || header.dim > kMaxIndexDim) {
      fail(fmt::format("{} has dimension {}; expected 1 to {}", what, header.dim, kMaxIndexDim));
    }
    if (header.size < 0) fail(fmt::format("{} holds {} pictures", what, header.size));
    return header;
  }

  // An exact inner-product index of `expected.dim`-d features: `expected.size` of them.
  void flat_index(const char* what, const Header& expected) {
    const auto header = index_header(what);
    if (header.dim != expected.dim || header.size != expected.size) {
      fail(fmt::format("{} holds {} features of dimension {}, expected {} of dimension {}", what,
                       header.size, header.dim, expected.size, expected.dim));
    }
    const auto floats = count(what, 4);
    if (floats != static_cast<uint64_t>(header.size) * static_cast<uint64_t>(header.dim)) {
      fail(fmt::format("{} declares {} features, but stores {} values", what, header.size, floats));
    }
    skip(floats * 4, what);
  }

  void ivf_index(uint32_t type, const Header& outer) {
    const auto header = index_header("the IVF index");
    if (header.dim != outer.dim || header.size != outer.size) {
      fail("the IVF index and its normalisation disagree on the dimension or the size");
    }
    const auto nlist = read<uint64_t>("the IVF cell count");
    const auto nprobe = read<uint64_t>("the IVF nprobe");
    if (nlist < 1 || nlist > (source_.size() - at_) / (4 * static_cast<uint64_t>(header.dim))) {
      fail(fmt::format("it claims {} IVF cells, which its coarse quantizer cannot hold", nlist));
    }
    if (nprobe < 1 || nprobe > nlist) {
      fail(fmt::format("it searches {} cells a query (nprobe), expected 1 to its {} cells", nprobe, nlist));
    }
    if (fourcc("the coarse quantizer") != code("IxFI")) {
      fail("its coarse quantizer is not a flat inner-product index");
    }
    flat_index("the coarse quantizer", {header.dim, static_cast<int64_t>(nlist)});
    if (read<uint8_t>("the direct map") != 0 || count("the direct map", 8) != 0) {
      fail("it keeps a direct map, which gallery indexes do not use");
    }
    uint64_t code_size = 4 * static_cast<uint64_t>(header.dim);
    if (type == code("IwSq") || type == code("IwSQ")) {
      code_size = scalar_quantizer(header.dim);
      if (read<uint64_t>("the IVF code size") != code_size) fail("its code size is not its scalar quantizer's");
      if (type == code("IwSq")) read<uint8_t>("the residual flag");
    } else if (type == code("IwPQ")) {
      read<uint8_t>("the residual flag");
      code_size = read<uint64_t>("the IVF code size");
      product_quantizer(header.dim, code_size);
    }
    inverted_lists(nlist, code_size, header.size);
  }

  // FAISS's SQ8, SQ6 and SQ4 with a trained range (minimum, width) for each component; returns
  // the code size.
  uint64_t scalar_quantizer(int64_t dim) {
    const auto type = read<int32_t>("the scalar quantizer type");
    read<int32_t>("the scalar quantizer range statistic");
    read<float>("the scalar quantizer range argument");
    const auto d = read<uint64_t>("the scalar quantizer dimension");
    const auto code_size = read<uint64_t>("the scalar quantizer code size");
    const auto trained = count("the scalar quantizer ranges", 4);
    const auto n = static_cast<uint64_t>(dim);
    uint64_t expected = 0;
    if (type == faiss::ScalarQuantizer::QT_8bit) expected = n;
    if (type == faiss::ScalarQuantizer::QT_6bit) expected = (n * 6 + 7) / 8;
    if (type == faiss::ScalarQuantizer::QT_4bit) expected = (n + 1) / 2;
    if (expected == 0 || d != n || code_size != expected || trained != 2 * n) {
      fail("its scalar quantizer is not SQ8, SQ6 or SQ4 with a range for each component");
    }
    skip(trained * 4, "the scalar quantizer ranges");
    return code_size;
  }

  void product_quantizer(int64_t dim, uint64_t code_size) {
    const auto d = read<uint64_t>("the product quantizer dimension");
    const auto m = read<uint64_t>("the product quantizer's sub-quantizer count");
    const auto bits = read<uint64_t>("the product quantizer's bits");
    if (d != static_cast<uint64_t>(dim) || m < 1 || d % m != 0 || bits < 1 || bits > 16 ||
        (m * bits + 7) / 8 != code_size) {
      fail(fmt::format("its product quantizer ({} values, {} sub-quantizers of {} bits) does not "
                       "match its {}-d features and {}-byte codes", d, m, bits, dim, code_size));
    }
    if (count("the product quantizer centroids", 4) != d << bits) {
      fail("its product quantizer does not hold a centroid table for each sub-quantizer");
    }
    skip((d << bits) * 4, "the product quantizer centroids");
  }

  // Lists stored in the file ("ilar"): per cell, `code_size`-byte codes and picture ids, which
  // must lie within the index and add up to its size.
  void inverted_lists(uint64_t nlist, uint64_t code_size, int64_t total) {
    const auto type = fourcc("the inverted lists");
    if (type != code("ilar")) {
      fail(fmt::format("its inverted lists are not stored in the file (FAISS type '{}': on-disk "
                       "or missing lists are refused, and no file they name is opened)",
                       printable(type)));
    }
    if (read<uint64_t>("the inverted list count") != nlist ||
        read<uint64_t>("the inverted list code size") != code_size) {
      fail("its inverted lists do not match its cells or its code size");
    }
    std::vector<uint64_t> sizes;
    const auto layout = fourcc("the inverted list sizes");
    if (layout == code("full")) {
      sizes = vector<uint64_t>("the inverted list sizes");
      if (sizes.size() != nlist) fail("it gives sizes for other than its cells");
    } else if (layout == code("sprs")) {
      sizes.assign(static_cast<size_t>(nlist), 0);
      const auto pairs = vector<uint64_t>("the inverted list sizes");
      if (pairs.size() % 2 != 0) fail("its sparse list sizes are not (cell, size) pairs");
      for (size_t i = 0; i < pairs.size(); i += 2) {
        if (pairs[i] >= nlist) fail(fmt::format("it gives a size for cell {} of {}", pairs[i], nlist));
        sizes[pairs[i]] = pairs[i + 1];
      }
    } else {
      fail(fmt::format("its inverted list sizes are stored as '{}'", printable(layout)));
    }
    uint64_t listed = 0;
    std::vector<int64_t> ids;
    for (const auto cell : c10::irange(sizes.size())) {
      const auto n = sizes[cell];
      if (n > static_cast<uint64_t>(total) - listed) {
        fail(fmt::format("its cells list more pictures than the {} it declares", total));
      }
      listed += n;
      if (n == 0) continue;
      skip(n * code_size, "an inverted list's codes");
      if (n * 8 > source_.size() - at_) fail("the file ends inside an inverted list's ids");
      ids.resize(static_cast<size_t>(n));
      source_.read(at_, ids.data(), n * 8);
      at_ += n * 8;
      for (const auto id : ids) {
        if (id < 0 || id >= total) fail(fmt::format("cell {} lists picture {} of {}", cell, id, total));
      }
    }
    if (listed != static_cast<uint64_t>(total)) {
      fail(fmt::format("its cells list {} pictures, but it declares {}", listed, total));
    }
  }

  void hnsw_index(const Header& outer) {
    const auto header = index_header("the HNSW index");
    if (header.dim != outer.dim || header.size != outer.size) {
      fail("the HNSW index and its normalisation disagree on the dimension or the size");
    }
    const auto total = header.size;
    const auto probabilities = vector<double>("the HNSW level probabilities");
    const auto per_level = vector<int32_t>("the HNSW links a level");
    const auto levels = vector<int32_t>("the HNSW levels");
    const auto offsets = vector<uint64_t>("the HNSW offsets");
    const auto links = vector<int32_t>("the HNSW links");
    const auto entry_point = read<int32_t>("the HNSW entry point");
    const auto max_level = read<int32_t>("the HNSW top level");
    const auto ef_construction = read<int32_t>("the HNSW efConstruction");
    const auto ef_search = read<int32_t>("the HNSW efSearch");
    const auto upper_beam = read<int32_t>("the HNSW upper beam");
    // Cumulative link counts: per_level[l + 1] - per_level[l] links on level l. Adding a
    // picture draws its level from the probabilities, so each needs a level to draw.
    const auto layers = static_cast<int64_t>(per_level.size()) - 1;
    if (layers < 1 || per_level[0] != 0 || probabilities.size() != static_cast<size_t>(layers)) {
      fail("its levels' link counts and probabilities do not match");
    }
    for (const auto l : c10::irange(layers)) {
      const auto width = int64_t{per_level[l + 1]} - per_level[l];
      const auto p = probabilities[static_cast<size_t>(l)];
      if (width < 1 || width > 2 * 4096 || !std::isfinite(p) || p < 0 || p > 1) {
        fail(fmt::format("level {} has {} links a picture and probability {}", l, width, p));
      }
    }
    if (levels.size() != static_cast<size_t>(total) || offsets.size() != static_cast<size_t>(total) + 1 ||
        offsets[0] != 0 || links.size() != offsets.back()) {
      fail(fmt::format("its graph does not hold its {} pictures", total));
    }
    int32_t top = 0;
    for (const auto i : c10::irange(total)) {
      const auto level = levels[static_cast<size_t>(i)];
      if (level < 1 || level > layers ||
          offsets[static_cast<size_t>(i) + 1] - offsets[static_cast<size_t>(i)] !=
              static_cast<uint64_t>(per_level[static_cast<size_t>(level)])) {
        fail(fmt::format("the links of picture {} do not match its level", i));
      }
      top = std::max(top, level);
    }
    // A link on level l must lead to a picture that has level l: search follows it there.
    for (const auto i : c10::irange(total)) {
      const auto begin = offsets[static_cast<size_t>(i)];
      for (const auto l : c10::irange(levels[static_cast<size_t>(i)])) {
        for (auto at = begin + per_level[l]; at < begin + per_level[l + 1]; ++at) {
          const auto to = links[at];
          if (to < -1 || to >= total) fail(fmt::format("picture {} links to picture {} of {}", i, to, total));
          if (to >= 0 && levels[static_cast<size_t>(to)] <= l) {
            fail(fmt::format("picture {} links on level {} to picture {}, which is not on that level", i, l, to));
          }
        }
      }
    }
    if ((total == 0 && (entry_point != -1 || max_level != -1)) ||
        (total > 0 && (entry_point < 0 || entry_point >= total || max_level != top - 1 ||
                       levels[static_cast<size_t>(entry_point)] != top))) {
      fail("its entry point is not one of its pictures at its top level");
    }
    if (ef_search < 1 || ef_search > kMaxEfSearch || ef_construction < 1 ||
        ef_construction > kMaxEfSearch) {
      fail(fmt::format("it stores efSearch {} and efConstruction {}; expected 1 to {}", ef_search,
                       ef_construction, kMaxEfSearch));
    }
    if (upper_beam != 1) fail(fmt::format("it stores an upper beam of {}; FAISS writes 1", upper_beam));
    if (fourcc("the HNSW storage") != code("IxFI")) fail("its storage is not a flat inner-product index");
    flat_index("the HNSW storage", header);
  }

  const ByteSource& source_;
  std::string path_;
  uint64_t at_ = 0;
};

/// An open file read with positioned reads, so that the bytes checked are the bytes FAISS
/// then reads from the same descriptor, whatever happens to the path meanwhile.
class DescriptorSource : public ByteSource {
 public:
  DescriptorSource(int fd, uint64_t size) : fd_(fd), size_(size) {}
  uint64_t size() const override { return size_; }

 protected:
  void read_unchecked(uint64_t offset, void* out, uint64_t length) const override {
    auto* cursor = static_cast<char*>(out);
    while (length > 0) {
      const auto got = ::pread(fd_, cursor, static_cast<size_t>(std::min<uint64_t>(length, 1u << 30)),
                               static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw CheckpointError("read error at byte " + std::to_string(offset));
      cursor += got;
      offset += static_cast<uint64_t>(got);
      length -= static_cast<uint64_t>(got);
    }
  }

 private:
  int fd_;
  uint64_t size_;
};

/// Walks the gallery index file open as `fd` (see the top of this file); throws InputError
/// naming `path` and the field at fault.
inline IndexFileFacts check_index_file(int fd, const std::string& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    throw InputError(fmt::format("{}: not a regular file", path));
  }
  try {
    const DescriptorSource source(fd, static_cast<uint64_t>(info.st_size));
    return IndexFileWalker(source, path).walk();
  } catch (const CheckpointError& error) {  // a read error
    throw InputError(fmt::format("{}: {}", path, error.what()));
  }
}

}  // namespace reidnet::detail
