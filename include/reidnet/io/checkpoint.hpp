#pragma once
/// Checkpoint interop with Python: read PyTorch `.pth` files (zip and legacy formats) and
/// safetensors files safely, load them into modules, and write files that `torch.load` reads.
///
/// Reading never runs code from the file: the unpickler accepts only the globals that tensor
/// checkpoints use and refuses any other by name. Every length and offset is checked.
///
///     reidnet::FtNet net(751);
///     reidnet::load_state_dict(*net, "net_last.pth");   // strict, all or nothing
///     reidnet::save_state_dict(*net, "net_copy.pth");   // torch.load(...) reads it

#include <reidnet/core/detail/byte_source.hpp>
#include <reidnet/io/detail/checkpoint_layout.hpp>
#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/io/detail/pickle.hpp>
#include <reidnet/io/detail/zip.hpp>
#include <reidnet/io/state_dict.hpp>

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet {

namespace detail {

inline c10::ScalarType torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat64: return torch::kFloat64;
    case DType::kFloat32: return torch::kFloat32;
    case DType::kFloat16: return torch::kFloat16;
    case DType::kBFloat16: return torch::kBFloat16;
    case DType::kInt64: return torch::kInt64;
    case DType::kInt32: return torch::kInt32;
    case DType::kInt16: return torch::kInt16;
    case DType::kInt8: return torch::kInt8;
    case DType::kUInt8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  throw CheckpointError("unknown dtype");
}

inline const DTypeInfo& checkpoint_dtype(c10::ScalarType type, const std::string& name) {
  for (const auto& info : dtype_table()) {
    if (torch_dtype(info.dtype) == type) return info;
  }
  throw std::runtime_error("cannot save tensor '" + name + "' of dtype " +
                           std::string(c10::toString(type)) + ": checkpoints hold float, "
                           "bfloat16, integer and bool tensors");
}

/// Runs `body`, turning any failure into std::runtime_error("<what> <path>: <problem>").
template <typename Body>
auto with_file_context(const std::string& what, const std::string& path, Body body) {
  try {
    return body();
  } catch (const std::exception& error) {
    throw std::runtime_error(what + " '" + path + "': " + error.what());
  }
}

inline bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

inline std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

inline std::string shape_text(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

/// Reads each storage once into a tensor of its own and checks zip records against their
/// CRC-32. The layout has checked that every range lies inside the file and that no two
/// overlap, so these buffers add up to at most the file's size.
inline std::vector<torch::Tensor> read_storages(const ByteSource& source,
                                                const std::vector<StorageRecord>& records) {
  std::vector<torch::Tensor> storages;
  storages.reserve(records.size());
  for (const auto& record : records) {
    auto storage = torch::empty({static_cast<int64_t>(record.numel)},
                                torch::TensorOptions().dtype(torch_dtype(record.dtype)));
    source.read(record.byte_offset, storage.data_ptr(), storage.nbytes());
    if (record.has_crc) {
      Crc32 crc;
      crc.update(storage.data_ptr(), storage.nbytes());
      // A record may run past its storage's bytes: stream the rest through the checksum.
      std::vector<uint8_t> chunk;
      for (uint64_t at = storage.nbytes(); at < record.record_size;) {
        chunk.resize(static_cast<size_t>(std::min<uint64_t>(record.record_size - at, 1 << 20)));
        source.read(record.byte_offset + at, chunk.data(), chunk.size());
        crc.update(chunk.data(), chunk.size());
        at += chunk.size();
      }
      check_zip_crc(record.record, crc.value(), record.crc);
    }
    storages.push_back(std::move(storage));
  }
  return storages;
}

/// A torch.save file read whole and safely: its object tree (only whitelisted kinds) and its
/// tensors, for files that hold more than a flat state dict (optimizer states).
class LoadedArchive {
 public:
  explicit LoadedArchive(const std::string& path) {
    const FileSource source(path);
    archive_ = read_pickled_archive(source);
    storages_ = read_storages(source, archive_.storages);
  }

  const Value& root() const { return *archive_.root; }

  /// The tensor a Tensor value describes (a view of its storage, on the CPU).
  torch::Tensor tensor(const Value& value) const {
    if (value.kind != Value::Kind::kTensor) {
      throw CheckpointError(std::string("expected a tensor, found a ") + kind_name(value.kind));
    }
    const auto& view = *value.tensor;
    check_view_elements(view, "a tensor");
    return storages_[archive_.storage_of.at(view.storage.get())].as_strided(
        view.sizes, view.strides, static_cast<int64_t>(view.offset));
  }

 private:
  PickledArchive archive_;
  std::vector<torch::Tensor> storages_;
};

/// Writes a zip archive that `torch.load` reads: the caller builds the object with `pickle()`,
/// calling `tensor()` where a tensor goes; `write()` adds the tensors' bytes as records.
class ArchiveWriter {
 public:
  PickleWriter& pickle() { return pickle_; }

  /// Pickles `value` as torch._utils._rebuild_tensor_v2 of a storage of its own.
  void tensor(const torch::Tensor& value, const std::string& name) {
    auto tensor = value.detach().to(torch::kCPU).contiguous();
    const auto& info = checkpoint_dtype(tensor.scalar_type(), name);
    pickle_.global("torch._utils", "_rebuild_tensor_v2");
    pickle_.mark();
    pickle_.mark();
    pickle_.string("storage");
    pickle_.global("torch", info.storage);
    pickle_.string(std::to_string(storages_.size()));
    pickle_.string("cpu");
    pickle_.integer(tensor.numel());
    pickle_.tuple();
    pickle_.persistent_id();
    pickle_.integer(0);
    pickle_.integer_tuple(tensor.sizes().vec());
    pickle_.integer_tuple(tensor.strides().vec());
    pickle_.boolean(value.requires_grad());
    pickle_.global("collections", "OrderedDict");
    pickle_.empty_tuple();
    pickle_.reduce();
    pickle_.tuple();
    pickle_.reduce();
    storages_.push_back(std::move(tensor));
  }

  /// Ends the pickle and writes the archive through write_file_atomically: a crash never
  /// leaves a partial file at `path`.
  void write(const std::string& path) {
    pickle_.stop();
    write_file_atomically(path, [&](std::ostream& file) {
      ZipWriter zip(file);
      zip.add_entry("archive/data.pkl", pickle_.bytes());
      zip.add_entry("archive/byteorder", "little");
      for (size_t i = 0; i < storages_.size(); ++i) {
        const auto& tensor = storages_[i];
        Crc32 crc;
        crc.update(tensor.data_ptr(), tensor.nbytes());
        zip.begin_entry("archive/data/" + std::to_string(i), tensor.nbytes(), crc.value());
        zip.write_data(tensor.data_ptr(), tensor.nbytes());
      }
      zip.add_entry("archive/version", "3\n");
      zip.finish();
    });
  }

 private:
  PickleWriter pickle_;
  std::vector<torch::Tensor> storages_;
};

}  // namespace detail

/// Reads every tensor of a checkpoint, in file order, onto `device`.
///
/// Accepts torch.save files (zip and legacy formats) and safetensors; unwraps
/// {'state_dict': ...}-style nesting and strips DataParallel's `module.` prefix. Tensors that
/// shared a storage in the file share it here (on the CPU). Zip records are checked against
/// their CRC-32, and no file, however crafted, makes it allocate more than its own size.
///
///     auto tensors = reidnet::read_state_dict("resnet50-0676ba61.pth");
inline StateDict read_state_dict(const std::string& path, torch::Device device = torch::kCPU) {
  return detail::with_file_context("cannot read checkpoint", path, [&] {
    const detail::FileSource source(path);
    const auto layout = detail::read_checkpoint_layout(source);
    const auto storages = detail::read_storages(source, layout.storages);
    StateDict out;
    for (const auto& record : layout.tensors) {
      auto tensor = storages[record.storage].as_strided(record.sizes, record.strides,
                                                        static_cast<int64_t>(record.offset));
      if (device != torch::Device(torch::kCPU)) tensor = tensor.to(device);
      if (out.contains(record.name)) {
        throw detail::CheckpointError("the key '" + record.name + "' appears twice");
      }
      out.insert(record.name, std::move(tensor));
    }
    return out;
  });
}

/// How `load_state_dict` maps checkpoint keys onto the module.
///
///     // torchvision's resnet50 weights into FtNet's backbone:
///     reidnet::load_state_dict(*net, "resnet50.pth", reidnet::LoadOptions().into("model."));
///     // a 751-class checkpoint into a model with another class count:
///     reidnet::load_state_dict(*net, "net_last.pth",
///                              reidnet::LoadOptions().keep({"classifier.classifier."}));
struct LoadOptions {
  /// Refuse (and change nothing) on any missing, unexpected or shape-mismatched key.
  TORCH_ARG(bool, strict) = true;
  /// The checkpoint fills only the module's sub-tree with this key prefix (e.g. "model.");
  /// keys outside it are neither loaded nor missing.
  TORCH_ARG(std::string, into) = "";
  /// Module keys, or key prefixes ending in '.', left as they are: neither loaded nor
  /// missing, and the checkpoint's entries for them are ignored (e.g. a new classifier).
  TORCH_ARG(std::vector<std::string>, keep) = {};
};

/// What `load_state_dict` did, key by key (module keys).
struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;     // in the module, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the module
  std::vector<std::string> mismatched;  // "key: checkpoint [..] vs module [..]"

  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }

  std::string summary() const {
    std::string out = std::to_string(loaded.size()) + " loaded";
    if (!missing.empty()) out += "; missing: " + detail::join(missing);
    if (!unexpected.empty()) out += "; unexpected: " + detail::join(unexpected);
    if (!mismatched.empty()) out += "; shape mismatch: " + detail::join(mismatched);
    return out;
  }
};

/// Copies `tensors` into the module's parameters and buffers (cast to their dtype and moved
/// to their device). All or nothing: on error the module is unchanged.
inline LoadReport load_state_dict(torch::nn::Module& module, const StateDict& tensors,
                                  const LoadOptions& options = {}) {
  const auto kept = [&](const std::string& key) {
    for (const auto& pattern : options.keep()) {
      if (key == pattern || (!pattern.empty() && pattern.back() == '.' && detail::starts_with(key, pattern))) {
        return true;
      }
    }
    return false;
  };
  auto targets = state_dict(module);
  LoadReport report;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  std::set<std::string> provided;
  for (const auto& item : tensors) {
    const auto key = options.into() + item.key();
    if (kept(key)) continue;
    provided.insert(key);
    const auto* target = targets.find(key);
    if (!target) {
      report.unexpected.push_back(key);
      continue;
    }
    const auto& source = item.value();
    if (source.sizes() != target->sizes() || source.is_complex() != target->is_complex()) {
      report.mismatched.push_back(key + ": checkpoint " + detail::shape_text(source.sizes()) +
                                  " vs module " + detail::shape_text(target->sizes()));
      continue;
    }
    copies.emplace_back(*target, source);
    report.loaded.push_back(key);
  }
  // Checkpoints saved before PyTorch 0.4.1 (old torchvision weight files) have no
  // BatchNorm num_batches_tracked; Python's BatchNorm then loads 0, and so do we.
  const std::string batches_tracked = "num_batches_tracked";
  for (const auto& item : targets) {
    const auto& key = item.key();
    if (!detail::starts_with(key, options.into()) || kept(key) || provided.count(key)) continue;
    const auto stem = key.size() > batches_tracked.size()
                          ? key.substr(0, key.size() - batches_tracked.size())
                          : std::string();
    if (!stem.empty() && key.compare(stem.size(), std::string::npos, batches_tracked) == 0 &&
        provided.count(stem + "running_mean")) {
      copies.emplace_back(item.value(), torch::zeros_like(item.value()));
      report.loaded.push_back(key);
      continue;
    }
    report.missing.push_back(key);
  }
  if (options.strict() && !report.complete()) {
    throw std::runtime_error("strict state_dict load refused, the module is unchanged (" +
                             report.summary() +
                             "); use LoadOptions().into(prefix), .keep(keys) or .strict(false)");
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) target.copy_(source);
  return report;
}

/// Loads a checkpoint file into the module; see `read_state_dict` for the formats read and
/// `LoadOptions` for key mapping. Throws std::runtime_error naming the file and the keys.
inline LoadReport load_state_dict(torch::nn::Module& module, const std::string& path,
                                  const LoadOptions& options = {}) {
  const auto tensors = read_state_dict(path);
  return detail::with_file_context("cannot load checkpoint", path,
                                   [&] { return load_state_dict(module, tensors, options); });
}

/// Writes named tensors as the zip checkpoint `torch.save(OrderedDict(...))` writes; Python's
/// `torch.load` returns them in this order. Written to a temporary file, then renamed, so a
/// crash never leaves a partial file at `path`.
///
///     reidnet::save_tensors(features, "pytorch_result.pth");  // qf, ql, gf, ... for Python
inline void save_tensors(const StateDict& tensors, const std::string& path) {
  detail::with_file_context("cannot write checkpoint", path, [&] {
    detail::ArchiveWriter archive;
    auto& pickle = archive.pickle();
    pickle.global("collections", "OrderedDict");
    pickle.empty_tuple();
    pickle.reduce();
    pickle.mark();
    for (const auto& item : tensors) {
      pickle.string(item.key());
      archive.tensor(item.value(), item.key());
    }
    pickle.set_items();
    archive.write(path);
  });
}

/// Saves the module's state_dict (Python key order) as a zip checkpoint that Python's
/// `model.load_state_dict(torch.load(path))` loads strictly.
inline void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  save_tensors(state_dict(module), path);
}

}  // namespace reidnet
