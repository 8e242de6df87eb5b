#pragma once
/// Where each tensor of a checkpoint lies in the file, for the three containers reidnet reads:
/// PyTorch's zip format, PyTorch's legacy format (before 1.6) and safetensors.
///
/// This layer only parses and validates; it allocates nothing in proportion to tensor sizes,
/// so the libFuzzer target exercises all of it without LibTorch. Every storage range it
/// returns lies inside the file, and every tensor view lies inside its storage.

#include <reidnet/core/detail/byte_source.hpp>
#include <reidnet/io/detail/pickle.hpp>
#include <reidnet/io/detail/zip.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace reidnet::detail {

/// A storage's bytes: `numel` elements of `dtype` at `byte_offset` in the file.
struct StorageRecord {
  DType dtype = DType::kFloat32;
  uint64_t numel = 0;
  uint64_t byte_offset = 0;
  std::string location;  // "cpu", "cuda:0", ...: where it was saved from
  std::string record;    // the zip record or legacy storage key, for messages
  /// Zip records carry a CRC-32 of their `record_size` bytes (which start at byte_offset and
  /// may run past the storage's own bytes).
  bool has_crc = false;
  uint32_t crc = 0;
  uint64_t record_size = 0;

  uint64_t nbytes() const {
    return checked_multiply(numel, dtype_info(dtype).element_size, "storage size");
  }
};

/// A torch.save archive (zip or legacy format): the unpickled object and the bytes of every
/// storage it names. Storages whose records are the same bytes of the file share one entry, so
/// no file makes the reader allocate more than the file's size.
struct PickledArchive {
  std::string format;  // "zip" or "legacy"
  ValuePtr root;
  std::vector<StorageRecord> storages;
  std::map<const StorageRef*, size_t> storage_of;  // every storage named -> its entry
};

/// A named tensor: a strided view of storage `storage`.
struct TensorRecord {
  std::string name;
  size_t storage = 0;
  uint64_t offset = 0;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
};

struct CheckpointLayout {
  std::string format;              // "zip", "legacy" or "safetensors"
  std::vector<StorageRecord> storages;
  std::vector<TensorRecord> tensors;  // in file order
  std::string unwrapped_from;      // e.g. "['state_dict']" for a nested checkpoint
  bool stripped_module_prefix = false;
};

namespace checkpoint_layout {

/// The keys under which training scripts nest a state dict, in the order they are tried.
inline const std::vector<std::string>& nesting_keys() {
  static const std::vector<std::string> keys = {"state_dict", "model_state_dict", "model",
                                                "net", "network", "module", "weights"};
  return keys;
}

inline std::string describe_keys(const Value& dict) {
  std::string out;
  size_t shown = 0;
  for (const auto& [key, value] : dict.entries) {
    if (shown++ == 8) return out + ", ...";
    if (!out.empty()) out += ", ";
    out += (key->kind == Value::Kind::kString ? "'" + key->text + "'" : kind_name(key->kind));
    out += std::string(" (") + kind_name(value->kind) + ")";
  }
  return out.empty() ? "none" : out;
}

/// The dict of tensors inside `root`, unwrapping {'state_dict': ...}-style nesting.
inline const Value& find_state_dict(const Value& root, std::string& path) {
  if (root.kind != Value::Kind::kDict) {
    throw CheckpointError(std::string("not a state dict: the file holds a ") + kind_name(root.kind) +
                          ", not a dict of tensors");
  }
  bool all_tensors = true;
  for (const auto& [key, value] : root.entries) {
    all_tensors = all_tensors && value->kind == Value::Kind::kTensor;
  }
  if (all_tensors && !root.entries.empty()) return root;
  for (const auto& key : nesting_keys()) {
    const auto* nested = root.find(key);
    if (nested && (*nested)->kind == Value::Kind::kDict) {
      path += "['" + key + "']";
      return find_state_dict(**nested, path);
    }
  }
  throw CheckpointError("not a state dict: no dict of tensors" +
                        (path.empty() ? std::string() : " under " + path) + "; its keys are " +
                        describe_keys(root));
}

/// Fills layout.tensors (and the storages they use) from the archive's state dict.
inline void collect_tensors(const PickledArchive& archive, CheckpointLayout& layout) {
  const auto& dict = find_state_dict(*archive.root, layout.unwrapped_from);
  std::map<size_t, size_t> layout_index;  // archive storage -> layout storage
  for (const auto& [key, value] : dict.entries) {
    if (key->kind != Value::Kind::kString) throw CheckpointError("not a state dict: a key is not a string");
    const auto& tensor = *value->tensor;
    check_view_elements(tensor, "tensor '" + key->text + "'");
    const size_t storage = archive.storage_of.at(tensor.storage.get());
    auto [found, inserted] = layout_index.emplace(storage, layout.storages.size());
    if (inserted) layout.storages.push_back(archive.storages[storage]);
    layout.tensors.push_back({key->text, found->second, tensor.offset, tensor.sizes, tensor.strides});
  }
}

/// Refuses storages whose byte ranges overlap, except where two are exactly the same bytes:
/// those are merged into one entry (`storage_of` then maps both to it). Zero-length storages
/// overlap nothing.
inline void merge_identical_ranges(PickledArchive& archive) {
  std::vector<size_t> order(archive.storages.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto& storages = archive.storages;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(storages[a].byte_offset, storages[a].nbytes()) <
           std::make_pair(storages[b].byte_offset, storages[b].nbytes());
  });
  std::vector<size_t> merged_into(storages.size());
  std::vector<StorageRecord> kept;
  std::vector<size_t> kept_index(storages.size());
  const StorageRecord* previous = nullptr;  // the last non-empty one
  size_t previous_kept = 0;
  uint64_t previous_end = 0;
  for (const size_t i : order) {
    const auto& record = storages[i];
    const uint64_t end = record.byte_offset + record.nbytes();
    if (record.nbytes() > 0 && previous && record.byte_offset == previous->byte_offset &&
        end == previous_end) {
      if (record.dtype != previous->dtype || record.has_crc != previous->has_crc ||
          record.crc != previous->crc || record.record_size != previous->record_size) {
        throw CheckpointError("corrupt checkpoint: the records " + previous->record + " and " +
                              record.record + " are the same bytes of the file but declare "
                              "different types, sizes or checksums");
      }
      kept_index[i] = previous_kept;
      continue;
    }
    if (record.nbytes() > 0 && previous && record.byte_offset < previous_end) {
      throw CheckpointError("corrupt checkpoint: the records " + previous->record + " and " +
                            record.record + " overlap in the file");
    }
    kept_index[i] = kept.size();
    kept.push_back(record);
    if (record.nbytes() > 0) {
      previous = &storages[i];
      previous_kept = kept_index[i];
      previous_end = end;
    }
  }
  for (auto& [ref, index] : archive.storage_of) index = kept_index[index];
  archive.storages = std::move(kept);
}

inline StorageRecord storage_record(const StorageRef& storage, std::string record,
                                    uint64_t byte_offset) {
  StorageRecord out;
  out.dtype = storage.dtype;
  out.numel = storage.numel;
  out.location = storage.location;
  out.record = std::move(record);
  out.byte_offset = byte_offset;
  return out;
}

inline PickledArchive read_zip(const ByteSource& source) {
  PickledArchive archive;
  archive.format = "zip";
  const ZipReader zip(source);
  const ZipEntry* pickle = nullptr;
  for (const auto& entry : zip.entries()) {
    const auto slash = entry.name.find('/');
    if (slash != std::string::npos && entry.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      pickle = &entry;
      break;
    }
  }
  if (!pickle) {
    throw CheckpointError("a zip archive without <archive>/data.pkl: not a torch.save checkpoint "
                          "(TorchScript and other zip files are not state dicts)");
  }
  const std::string prefix = pickle->name.substr(0, pickle->name.size() - 8);  // keeps the '/'
  const auto bytes = zip.read_entry(*pickle);
  const MemorySource pickle_source(bytes.data(), bytes.size());
  Unpickler unpickler(pickle_source, 0);
  archive.root = unpickler.load();
  for (const auto& storage : unpickler.storages()) {
    const auto name = prefix + "data/" + storage->key;
    const auto* entry = zip.find(name);
    if (!entry) throw CheckpointError("truncated or corrupt: the record " + name + " is missing");
    auto record = storage_record(*storage, name, zip.data_offset(*entry));
    if (entry->size < record.nbytes()) {
      throw CheckpointError("truncated or corrupt: the record " + name + " has " +
                            std::to_string(entry->size) + " bytes, the tensor needs " +
                            std::to_string(record.nbytes()));
    }
    record.has_crc = true;
    record.crc = entry->crc;
    record.record_size = entry->size;
    archive.storage_of.emplace(storage.get(), archive.storages.size());
    archive.storages.push_back(std::move(record));
  }
  return archive;
}

inline PickledArchive read_legacy(const ByteSource& source) {
  PickledArchive archive;
  archive.format = "legacy";
  // Magic number 0x1950a86a20f9469cfc6c, as a 10-byte little-endian pickle integer.
  static const std::string magic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  Unpickler magic_reader(source, 0);
  const auto number = magic_reader.load();
  if (number->kind != Value::Kind::kBigInt || number->text != magic) {
    throw CheckpointError("a pickle without PyTorch's magic number: not a torch.save checkpoint");
  }
  Unpickler version_reader(source, magic_reader.end_offset());
  const auto version = version_reader.load();
  if (version->kind != Value::Kind::kInt || version->integer != 1001) {
    throw CheckpointError("unsupported legacy sub-format: protocol version " +
                          (version->kind == Value::Kind::kInt ? std::to_string(version->integer)
                                                             : std::string("?")));
  }
  Unpickler system_reader(source, version_reader.end_offset());
  const auto system = system_reader.load();
  const ValuePtr* little = system->kind == Value::Kind::kDict ? system->find("little_endian") : nullptr;
  if (!little || (*little)->kind != Value::Kind::kBool || (*little)->integer != 1) {
    throw CheckpointError("unsupported legacy sub-format: not saved on a little-endian machine");
  }
  Unpickler main_reader(source, system_reader.end_offset());
  archive.root = main_reader.load();
  Unpickler keys_reader(source, main_reader.end_offset());
  const auto keys = keys_reader.load();
  if (keys->kind != Value::Kind::kList) throw CheckpointError("corrupt legacy checkpoint: no storage key list");

  // Storages follow in key-list order, each as an int64 element count and the raw bytes.
  std::map<std::string, const StorageRef*> referenced;
  for (const auto& storage : main_reader.storages()) referenced.emplace(storage->key, storage.get());
  uint64_t position = keys_reader.end_offset();
  for (const auto& key : keys->items) {
    if (key->kind != Value::Kind::kString) throw CheckpointError("corrupt legacy checkpoint: a storage key is not a string");
    const auto found = referenced.find(key->text);
    if (found == referenced.end()) {
      throw CheckpointError("corrupt legacy checkpoint: storage " + key->text + " is not used by any tensor");
    }
    uint8_t count_bytes[8];
    source.read(position, count_bytes, 8);
    const auto numel = little_endian<uint64_t>(count_bytes);
    if (numel != found->second->numel) {
      throw CheckpointError("corrupt legacy checkpoint: storage " + key->text + " has " +
                            std::to_string(numel) + " elements, its tensors expect " +
                            std::to_string(found->second->numel));
    }
    auto record = storage_record(*found->second, "storage " + key->text, position + 8);
    source.require(record.byte_offset, record.nbytes(), record.record);
    if (!archive.storage_of.emplace(found->second, archive.storages.size()).second) {
      throw CheckpointError("corrupt legacy checkpoint: storage " + key->text + " is listed twice");
    }
    position = record.byte_offset + record.nbytes();
    archive.storages.push_back(std::move(record));
  }
  for (const auto& storage : main_reader.storages()) {
    if (!archive.storage_of.count(storage.get())) {
      throw CheckpointError("truncated or corrupt: storage " + storage->key + " is missing");
    }
  }
  return archive;
}

inline void read_safetensors(const ByteSource& source, CheckpointLayout& layout) {
  layout.format = "safetensors";
  uint8_t length_bytes[8];
  source.read(0, length_bytes, 8);
  const auto header_length = little_endian<uint64_t>(length_bytes);
  const auto header = source.read_vector(8, header_length, "safetensors header");
  const uint64_t data_start = 8 + header_length;
  const uint64_t data_length = source.size() - data_start;
  nlohmann::ordered_json json;
  try {
    json = nlohmann::ordered_json::parse(
        header.begin(), header.end(),
        [](int depth, nlohmann::ordered_json::parse_event_t, nlohmann::ordered_json&) {
          if (depth > 8) throw CheckpointError("safetensors header nests too deeply");
          return true;
        });
  } catch (const nlohmann::json::exception& error) {
    throw CheckpointError(std::string("corrupt safetensors header: ") + error.what());
  }
  if (!json.is_object()) throw CheckpointError("corrupt safetensors header: not a JSON object");
  for (const auto& item : json.items()) {
    const std::string name = item.key();
    const auto& entry = item.value();
    if (name == "__metadata__") continue;
    const auto problem = [&](const std::string& what) {
      return CheckpointError("corrupt safetensors entry '" + name + "': " + what);
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() ||
        !entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      throw problem("needs dtype, shape and data_offsets");
    }
    const auto dtype_name = entry["dtype"].get<std::string>();
    const DTypeInfo* info = nullptr;
    for (const auto& candidate : dtype_table()) {
      if (dtype_name == candidate.safetensors) info = &candidate;
    }
    if (!info) throw problem("unsupported dtype " + dtype_name);
    TensorRecord tensor;
    tensor.name = name;
    uint64_t numel = 1;
    for (const auto& size : entry["shape"]) {
      if (!size.is_number_unsigned()) throw problem("shape holds a non-integer");
      const auto value = size.get<uint64_t>();
      if (value > (uint64_t{1} << 62)) throw problem("absurd shape");
      numel = checked_multiply(numel, value, "tensor size");
      tensor.sizes.push_back(static_cast<int64_t>(value));
    }
    tensor.strides.assign(tensor.sizes.size(), 1);
    for (size_t d = tensor.sizes.size(); d-- > 1;) {
      tensor.strides[d - 1] = tensor.strides[d] * std::max<int64_t>(tensor.sizes[d], 1);
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw problem("data_offsets are not integers");
    }
    const auto begin = offsets[0].get<uint64_t>();
    const auto end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_length ||
        end - begin != checked_multiply(numel, info->element_size, "tensor bytes")) {
      throw problem("data_offsets do not match its shape or lie outside the file");
    }
    tensor.storage = layout.storages.size();
    StorageRecord record;
    record.dtype = info->dtype;
    record.numel = numel;
    record.byte_offset = data_start + begin;
    record.location = "cpu";
    record.record = "'" + name + "'";
    layout.storages.push_back(std::move(record));
    layout.tensors.push_back(std::move(tensor));
  }
  // As the reference implementation does, refuse tensors that share bytes: each would get
  // its own buffer, and a small file could claim many times its size.
  std::vector<const StorageRecord*> by_offset;
  for (const auto& record : layout.storages) {
    if (record.nbytes() > 0) by_offset.push_back(&record);
  }
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const StorageRecord* a, const StorageRecord* b) {
    return a->byte_offset < b->byte_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->byte_offset < by_offset[i - 1]->byte_offset + by_offset[i - 1]->nbytes()) {
      throw CheckpointError("corrupt safetensors file: the data_offsets of " +
                            by_offset[i - 1]->record + " and " + by_offset[i]->record + " overlap");
    }
  }
}

inline bool is_pickled_archive(const uint8_t* head) {
  return (head[0] == 'P' && head[1] == 'K') || head[0] == 0x80;
}

}  // namespace checkpoint_layout

/// Parses a torch.save file (zip or legacy format) holding any picklable tree of the
/// whitelisted kinds (dicts, lists, numbers, strings, tensors), and validates every storage
/// range. Throws CheckpointError.
inline PickledArchive read_pickled_archive(const ByteSource& source) {
  uint8_t head[8] = {};
  if (source.size() < 8) {
    throw CheckpointError("not a checkpoint: the file has only " + std::to_string(source.size()) +
                          " bytes");
  }
  source.read(0, head, 8);
  if (!checkpoint_layout::is_pickled_archive(head)) {
    throw CheckpointError("not a torch.save file: neither PyTorch's zip nor its legacy format");
  }
  auto archive = head[0] == 'P' ? checkpoint_layout::read_zip(source)
                                : checkpoint_layout::read_legacy(source);
  checkpoint_layout::merge_identical_ranges(archive);
  return archive;
}

/// Detects the container, parses it and validates every range. Throws CheckpointError.
inline CheckpointLayout read_checkpoint_layout(const ByteSource& source) {
  CheckpointLayout layout;
  const uint64_t size = source.size();
  if (size < 8) {
    throw CheckpointError("not a checkpoint: the file has only " + std::to_string(size) + " bytes");
  }
  uint8_t head[8];
  source.read(0, head, 8);
  if (checkpoint_layout::is_pickled_archive(head)) {
    const auto archive = read_pickled_archive(source);
    layout.format = archive.format;
    checkpoint_layout::collect_tensors(archive, layout);
  } else if (size > 262 && [&] {
               char magic[5];
               source.read(257, magic, 5);
               return std::string(magic, 5) == "ustar";
             }()) {
    throw CheckpointError("unsupported legacy sub-format: a tar archive (torch.save before 0.1.10); "
                          "load it in Python and re-save it");
  } else if (little_endian<uint64_t>(head) < kMaxMetadataBytes && size > 8 && [&] {
               uint8_t brace = 0;
               source.read(8, &brace, 1);
               return brace == '{';
             }()) {
    checkpoint_layout::read_safetensors(source, layout);
  } else {
    throw CheckpointError("not a checkpoint: neither a PyTorch zip or legacy file nor safetensors");
  }
  // DataParallel saves every key as module.<key>.
  const std::string prefix = "module.";
  bool all_prefixed = !layout.tensors.empty();
  for (const auto& tensor : layout.tensors) {
    all_prefixed = all_prefixed && tensor.name.compare(0, prefix.size(), prefix) == 0;
  }
  if (all_prefixed) {
    for (auto& tensor : layout.tensors) tensor.name.erase(0, prefix.size());
    layout.stripped_module_prefix = true;
  }
  return layout;
}

}  // namespace reidnet::detail
