#pragma once
/// A minimal, whitelist-only unpickler for tensor checkpoints, and the pickle writer of
/// `torch.save`-compatible state dicts.
///
/// Python's pickle runs whatever callable a file names; this one knows the few globals that
/// state dicts use (tensor and parameter rebuilds, OrderedDict, the storage types) and
/// refuses any other global by name before doing anything with it. Containers cannot be
/// changed once nested and nesting is bounded, so no input builds a cycle or a deep tree.

#include <reidnet/core/detail/byte_source.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace reidnet::detail {

/// Element types of checkpoint tensors, named as in PyTorch and safetensors.
enum class DType {
  kFloat64, kFloat32, kFloat16, kBFloat16, kInt64, kInt32, kInt16, kInt8, kUInt8, kBool
};

struct DTypeInfo {
  DType dtype;
  const char* storage;      // torch.<storage> in pickles
  const char* safetensors;  // safetensors "dtype"
  uint64_t element_size;
};

inline const std::vector<DTypeInfo>& dtype_table() {
  static const std::vector<DTypeInfo> table = {
      {DType::kFloat64, "DoubleStorage", "F64", 8}, {DType::kFloat32, "FloatStorage", "F32", 4},
      {DType::kFloat16, "HalfStorage", "F16", 2},   {DType::kBFloat16, "BFloat16Storage", "BF16", 2},
      {DType::kInt64, "LongStorage", "I64", 8},     {DType::kInt32, "IntStorage", "I32", 4},
      {DType::kInt16, "ShortStorage", "I16", 2},    {DType::kInt8, "CharStorage", "I8", 1},
      {DType::kUInt8, "ByteStorage", "U8", 1},      {DType::kBool, "BoolStorage", "BOOL", 1},
  };
  return table;
}

inline const DTypeInfo& dtype_info(DType dtype) {
  for (const auto& info : dtype_table()) {
    if (info.dtype == dtype) return info;
  }
  throw CheckpointError("unknown dtype");
}

struct Value;
using ValuePtr = std::shared_ptr<Value>;

/// A storage named by a persistent id: its bytes live outside the pickle.
struct StorageRef {
  std::string key;
  DType dtype = DType::kFloat32;
  uint64_t numel = 0;
  std::string location;
};

/// A tensor rebuilt by torch._utils._rebuild_tensor_v2: a strided view of a storage.
struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  uint64_t offset = 0;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
};

/// Refuses a view with more elements than its storage holds: zero strides (an expanded
/// tensor) or overlapping ones repeat the storage's values, and reading the view would take
/// memory that the file never held. `what` names the tensor in the error.
inline void check_view_elements(const TensorRef& tensor, const std::string& what) {
  uint64_t numel = 1;
  for (const auto size : tensor.sizes) numel = checked_multiply(numel, static_cast<uint64_t>(size), "tensor size");
  if (numel > tensor.storage->numel) {
    throw CheckpointError(what + " is a view of " + std::to_string(numel) +
                          " elements on a storage of " + std::to_string(tensor.storage->numel) +
                          ": zero or overlapping strides repeat its values; refused (save it "
                          "with .contiguous() or .clone())");
  }
}

/// One unpickled value. Containers own their items; `sealed` marks a container that has been
/// nested somewhere and so may no longer change.
struct Value {
  enum class Kind { kNone, kBool, kInt, kBigInt, kFloat, kString, kBytes, kTuple, kList, kDict,
                    kGlobal, kStorageType, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;
  double real = 0;
  std::string text;  // String, Bytes, BigInt (raw bytes), Global ("module.name")
  std::vector<ValuePtr> items;                          // Tuple, List
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;   // Dict, in insertion order
  std::unordered_map<std::string, size_t> entry_index;  // Dict: key -> position in entries
  DType dtype = DType::kFloat32;                         // StorageType
  std::shared_ptr<StorageRef> storage;                  // Storage
  std::shared_ptr<TensorRef> tensor;                    // Tensor
  bool sealed = false;
  int depth = 0;

  static ValuePtr make(Kind kind) {
    auto value = std::make_shared<Value>();
    value->kind = kind;
    return value;
  }
  bool is_container() const {
    return kind == Kind::kTuple || kind == Kind::kList || kind == Kind::kDict;
  }
  const ValuePtr* find(const std::string& key) const {
    const auto found = entry_index.find("s:" + key);
    return found == entry_index.end() ? nullptr : &entries[found->second].second;
  }
};

inline const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: case Value::Kind::kBigInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kBytes: return "bytes";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kList: return "list";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "global";
    case Value::Kind::kStorageType: return "storage type";
    case Value::Kind::kStorage: return "storage";
    case Value::Kind::kTensor: return "tensor";
  }
  return "value";
}

/// Reads one pickle from `source` starting at `offset`; `end_offset()` is where it stopped.
class Unpickler {
 public:
  static constexpr int kMaxDepth = 64;
  /// Real state dicts have a few values per tensor; this bounds the memory a hostile pickle
  /// of repeated one-byte opcodes can claim.
  static constexpr uint64_t kMaxValues = uint64_t{1} << 21;

  Unpickler(const ByteSource& source, uint64_t offset) : source_(source), position_(offset) {}

  ValuePtr load() {
    for (;;) {
      const uint64_t opcode_at = position_;
      const uint8_t opcode = read_byte();
      if (opcode == '.') break;  // STOP
      step(opcode, opcode_at);
    }
    if (stack_.size() != 1 || !marks_.empty()) {
      throw CheckpointError("malformed pickle: STOP with " + std::to_string(stack_.size()) +
                            " values on the stack");
    }
    return stack_.back();
  }

  uint64_t end_offset() const { return position_; }

  /// Storages named by persistent ids, in first-seen order.
  const std::vector<std::shared_ptr<StorageRef>>& storages() const { return storage_order_; }

 private:
  using Kind = Value::Kind;

  void step(uint8_t opcode, uint64_t opcode_at) {
    switch (opcode) {
      case 0x80: {  // PROTO
        const uint8_t protocol = read_byte();
        if (protocol > 5) throw CheckpointError("unsupported pickle protocol " + std::to_string(protocol));
        return;
      }
      case 0x95: read_integer<uint64_t>(); return;  // FRAME: a hint only
      case '(': marks_.push_back(stack_.size()); return;
      case '0': pop(); return;
      case '1': pop_mark(); return;
      case '2': push(top()); return;
      case 'N': push(fresh(Kind::kNone)); return;
      case 0x88: case 0x89: {
        auto value = fresh(Kind::kBool);
        value->integer = opcode == 0x88;
        push(value);
        return;
      }
      case 'J': push_int(read_integer<int32_t>()); return;
      case 'K': push_int(read_integer<uint8_t>()); return;
      case 'M': push_int(read_integer<uint16_t>()); return;
      case 0x8a: push_long(read_integer<uint8_t>()); return;
      case 0x8b: push_long(read_integer<uint32_t>()); return;
      case 'G': {
        const uint64_t bits = read_integer<uint64_t>(/*big_endian=*/true);
        auto value = fresh(Kind::kFloat);
        std::memcpy(&value->real, &bits, sizeof bits);
        push(value);
        return;
      }
      case 'X': case 'T': push_text(Kind::kString, read_integer<uint32_t>()); return;
      case 0x8c: case 'U': push_text(Kind::kString, read_integer<uint8_t>()); return;
      case 0x8d: push_text(Kind::kString, read_integer<uint64_t>()); return;
      case 'B': push_text(Kind::kBytes, read_integer<uint32_t>()); return;
      case 'C': push_text(Kind::kBytes, read_integer<uint8_t>()); return;
      case 0x8e: push_text(Kind::kBytes, read_integer<uint64_t>()); return;
      case ')': push(fresh(Kind::kTuple)); return;
      case 't': push(make_sequence(Kind::kTuple, pop_mark())); return;
      case 0x85: case 0x86: case 0x87: {
        const size_t count = opcode - 0x84u;
        push(make_sequence(Kind::kTuple, pop_values(count)));
        return;
      }
      case ']': push(fresh(Kind::kList)); return;
      case 'l': push(make_sequence(Kind::kList, pop_mark())); return;
      case 'a': append(pop_values(1)); return;
      case 'e': append(pop_mark()); return;
      case '}': push(fresh(Kind::kDict)); return;
      case 'd': {
        auto items = pop_mark();
        push(fresh(Kind::kDict));
        set_items(std::move(items));
        return;
      }
      case 's': set_items(pop_values(2)); return;
      case 'u': set_items(pop_mark()); return;
      case 'q': memo_put(read_integer<uint8_t>()); return;
      case 'r': memo_put(read_integer<uint32_t>()); return;
      case 0x94: memo_put(memo_.size()); return;
      case 'h': memo_get(read_integer<uint8_t>()); return;
      case 'j': memo_get(read_integer<uint32_t>()); return;
      case 'c': {
        const auto module = read_line();
        const auto name = read_line();
        push(resolve_global(module, name));
        return;
      }
      case 0x93: {
        const auto name = pop();
        const auto module = pop();
        if (module->kind != Kind::kString || name->kind != Kind::kString) {
          throw CheckpointError("malformed pickle: STACK_GLOBAL needs two strings");
        }
        push(resolve_global(module->text, name->text));
        return;
      }
      case 'R': {
        const auto arguments = pop();
        const auto callable = pop();
        push(reduce(callable, arguments));
        return;
      }
      case 'b': {
        const auto state = pop();
        build(top(), state);
        return;
      }
      case 'Q': push(persistent_load(pop())); return;
      default:
        throw CheckpointError("unsupported pickle opcode 0x" + hex(opcode) + " at byte " +
                              std::to_string(opcode_at) +
                              " (only the opcodes of tensor checkpoints are accepted)");
    }
  }

  ValuePtr fresh(Kind kind) {
    if (++created_ > kMaxValues) {
      throw CheckpointError("pickle holds more than " + std::to_string(kMaxValues) +
                            " objects: not a plausible tensor checkpoint");
    }
    return Value::make(kind);
  }

  // ----- input
  uint8_t read_byte() {
    uint8_t byte = 0;
    source_.read(position_, &byte, 1);
    ++position_;
    return byte;
  }

  template <typename T>
  T read_integer(bool big_endian = false) {
    uint8_t bytes[sizeof(T)];
    source_.read(position_, bytes, sizeof(T));
    position_ += sizeof(T);
    if (big_endian) std::reverse(bytes, bytes + sizeof(T));
    return little_endian<T>(bytes);
  }

  std::string read_bytes(uint64_t length) {
    source_.require(position_, length, "pickle string");
    if (length > kMaxMetadataBytes) throw CheckpointError("pickle string implausibly large");
    std::string text(static_cast<size_t>(length), '\0');
    source_.read(position_, text.data(), length);
    position_ += length;
    return text;
  }

  std::string read_line() {
    std::string line;
    for (;;) {
      const char c = static_cast<char>(read_byte());
      if (c == '\n') return line;
      if (line.size() >= 256) throw CheckpointError("malformed pickle: GLOBAL name too long");
      line.push_back(c);
    }
  }

  // ----- stack
  void push(ValuePtr value) {
    if (stack_.size() >= kMaxValues) throw CheckpointError("pickle stack implausibly deep");
    stack_.push_back(std::move(value));
  }

  const ValuePtr& top() const {
    if (stack_.size() <= floor()) throw CheckpointError("malformed pickle: stack underflow");
    return stack_.back();
  }

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }

  ValuePtr pop() {
    top();
    auto value = std::move(stack_.back());
    stack_.pop_back();
    return value;
  }

  std::vector<ValuePtr> pop_values(size_t count) {
    if (stack_.size() - floor() < count) throw CheckpointError("malformed pickle: stack underflow");
    std::vector<ValuePtr> values(stack_.end() - static_cast<std::ptrdiff_t>(count), stack_.end());
    stack_.resize(stack_.size() - count);
    return values;
  }

  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) throw CheckpointError("malformed pickle: no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> values(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return values;
  }

  void push_int(int64_t number) {
    auto value = fresh(Kind::kInt);
    value->integer = number;
    push(value);
  }

  void push_long(uint64_t length) {
    if (length > 64) throw CheckpointError("pickle integer of " + std::to_string(length) + " bytes");
    auto bytes = read_bytes(length);
    if (length > 8) {
      auto value = fresh(Kind::kBigInt);
      value->text = std::move(bytes);
      push(value);
      return;
    }
    uint64_t bits = 0;
    for (size_t i = 0; i < length; ++i) bits |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
    if (length > 0 && length < 8 && (static_cast<uint8_t>(bytes[length - 1]) & 0x80)) {
      bits |= ~uint64_t{0} << (8 * length);  // sign-extend
    }
    push_int(static_cast<int64_t>(bits));
  }

  void push_text(Kind kind, uint64_t length) {
    auto value = fresh(kind);
    value->text = read_bytes(length);
    push(value);
  }

  // ----- containers
  void adopt(Value& parent, const ValuePtr& child) {
    if (child.get() == &parent) throw CheckpointError("malformed pickle: a container contains itself");
    child->sealed = true;
    if (child->depth + 1 > kMaxDepth) {
      throw CheckpointError("pickle nests deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    parent.depth = std::max(parent.depth, child->depth + 1);
  }

  ValuePtr make_sequence(Kind kind, std::vector<ValuePtr> items) {
    auto value = fresh(kind);
    for (const auto& item : items) adopt(*value, item);
    value->items = std::move(items);
    return value;
  }

  Value& mutable_top(Kind kind, const char* opcode) {
    const auto& target = top();
    if (target->kind != kind) {
      throw CheckpointError(std::string("malformed pickle: ") + opcode + " on a " +
                            kind_name(target->kind));
    }
    if (target->sealed) {
      throw CheckpointError(std::string("unsupported pickle: ") + opcode +
                            " changes a container after nesting it (recursive structure)");
    }
    return *target;
  }

  void append(std::vector<ValuePtr> items) {
    auto& list = mutable_top(Kind::kList, "APPEND");
    for (auto& item : items) {
      adopt(list, item);
      list.items.push_back(std::move(item));
    }
  }

  void set_items(std::vector<ValuePtr> items) {
    if (items.size() % 2 != 0) throw CheckpointError("malformed pickle: odd SETITEMS count");
    auto& dict = mutable_top(Kind::kDict, "SETITEMS");
    for (size_t i = 0; i < items.size(); i += 2) {
      adopt(dict, items[i]);
      adopt(dict, items[i + 1]);
      std::string identity;
      if (items[i]->kind == Kind::kString) identity = "s:" + items[i]->text;
      if (items[i]->kind == Kind::kInt) identity = "i:" + std::to_string(items[i]->integer);
      if (!identity.empty()) {
        const auto [found, inserted] = dict.entry_index.emplace(identity, dict.entries.size());
        if (!inserted) {  // Python dicts keep the first position and the last value
          dict.entries[found->second].second = items[i + 1];
          continue;
        }
      }
      dict.entries.emplace_back(items[i], items[i + 1]);
    }
  }

  // ----- memo
  void memo_put(uint64_t index) {
    if (memo_.size() >= kMaxValues) throw CheckpointError("pickle memo too large");
    memo_[index] = top();
  }

  void memo_get(uint64_t index) {
    const auto found = memo_.find(index);
    if (found == memo_.end()) {
      throw CheckpointError("malformed pickle: memo entry " + std::to_string(index) + " is unset");
    }
    push(found->second);
  }

  // ----- globals: the whitelist
  ValuePtr resolve_global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    if (module == "torch") {
      for (const auto& info : dtype_table()) {
        if (name == info.storage) {
          auto value = fresh(Kind::kStorageType);
          value->dtype = info.dtype;
          value->text = full;
          return value;
        }
      }
    }
    static const char* const allowed[] = {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
    };
    for (const char* candidate : allowed) {
      if (full == candidate) {
        auto value = fresh(Kind::kGlobal);
        value->text = full;
        return value;
      }
    }
    throw CheckpointError("refusing the pickle global '" + full +
                          "': only tensor checkpoint globals (tensor and parameter rebuilds, "
                          "OrderedDict, torch storage types) are allowed, and nothing was executed");
  }

  static void expect_arguments(const Value& arguments, const std::string& callable, size_t low,
                               size_t high) {
    if (arguments.kind != Kind::kTuple || arguments.items.size() < low ||
        arguments.items.size() > high) {
      throw CheckpointError("malformed checkpoint: " + callable + " called with unexpected arguments");
    }
  }

  static std::vector<int64_t> integer_tuple(const Value& value, const char* what) {
    if (value.kind != Kind::kTuple && value.kind != Kind::kList) {
      throw CheckpointError(std::string("malformed tensor: ") + what + " is not a tuple");
    }
    std::vector<int64_t> numbers;
    for (const auto& item : value.items) {
      if (item->kind != Kind::kInt || item->integer < 0) {
        throw CheckpointError(std::string("malformed tensor: ") + what +
                              " holds a negative or non-integer entry");
      }
      numbers.push_back(item->integer);
    }
    return numbers;
  }

  ValuePtr reduce(const ValuePtr& callable, const ValuePtr& arguments) {
    if (callable->kind != Kind::kGlobal) {
      throw CheckpointError(std::string("malformed pickle: REDUCE calls a ") + kind_name(callable->kind));
    }
    const auto& name = callable->text;
    if (name == "collections.OrderedDict") {
      expect_arguments(*arguments, name, 0, 0);
      return fresh(Kind::kDict);
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      expect_arguments(*arguments, name, 3, 4);
      const auto& data = arguments->items[0];
      if (data->kind != Kind::kTensor) throw CheckpointError("malformed checkpoint: a parameter without a tensor");
      return data;
    }
    // torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, ...)
    expect_arguments(*arguments, name, 4, name == "torch._utils._rebuild_tensor" ? 4 : 7);
    const auto& items = arguments->items;
    if (items[0]->kind != Kind::kStorage) throw CheckpointError("malformed tensor: no storage");
    if (items[1]->kind != Kind::kInt || items[1]->integer < 0) {
      throw CheckpointError("malformed tensor: bad storage offset");
    }
    auto tensor = std::make_shared<TensorRef>();
    tensor->storage = items[0]->storage;
    tensor->offset = static_cast<uint64_t>(items[1]->integer);
    tensor->sizes = integer_tuple(*items[2], "size");
    tensor->strides = integer_tuple(*items[3], "stride");
    if (tensor->sizes.size() != tensor->strides.size()) {
      throw CheckpointError("malformed tensor: size and stride lengths differ");
    }
    check_extent(*tensor);
    auto value = fresh(Kind::kTensor);
    value->tensor = std::move(tensor);
    return value;
  }

  // The strided view must lie inside its storage.
  static void check_extent(const TensorRef& tensor) {
    uint64_t numel = 1;
    uint64_t last = tensor.offset;
    for (size_t d = 0; d < tensor.sizes.size(); ++d) {
      const auto size = static_cast<uint64_t>(tensor.sizes[d]);
      numel = checked_multiply(numel, size, "tensor size");
      if (size > 0) {
        last = checked_add(last, checked_multiply(size - 1, static_cast<uint64_t>(tensor.strides[d]),
                                                  "tensor extent"),
                           "tensor extent");
      }
    }
    if (numel > 0 && last >= tensor.storage->numel) {
      throw CheckpointError("malformed tensor: its view reaches element " + std::to_string(last) +
                            " of a storage of " + std::to_string(tensor.storage->numel));
    }
  }

  void build(const ValuePtr& target, const ValuePtr& state) {
    // OrderedDict state ({'_metadata': ...}) and parameter state carry nothing we need.
    if (target->kind == Kind::kDict) {
      if (target->sealed) throw CheckpointError("unsupported pickle: BUILD after nesting");
      adopt(*target, state);
      return;
    }
    throw CheckpointError(std::string("unsupported pickle: BUILD on a ") + kind_name(target->kind));
  }

  // ('storage', torch.<T>Storage, key, location, numel[, view_metadata])
  ValuePtr persistent_load(const ValuePtr& id) {
    const auto& items = id->items;
    if (id->kind != Kind::kTuple || items.size() < 5 || items.size() > 6 ||
        items[0]->kind != Kind::kString || items[0]->text != "storage" ||
        items[1]->kind != Kind::kStorageType || items[2]->kind != Kind::kString ||
        items[3]->kind != Kind::kString || items[4]->kind != Kind::kInt || items[4]->integer < 0) {
      throw CheckpointError("unsupported persistent id: only ('storage', type, key, location, "
                            "numel) records of tensor checkpoints are accepted");
    }
    if (items.size() == 6 && items[5]->kind != Kind::kNone) {
      throw CheckpointError("unsupported legacy sub-format: storage views (re-save the file with "
                            "a PyTorch >= 1.6 torch.save)");
    }
    const auto dtype = items[1]->dtype;
    const auto numel = static_cast<uint64_t>(items[4]->integer);
    checked_multiply(numel, dtype_info(dtype).element_size, "storage size");
    auto& storage = storage_index_[items[2]->text];
    if (!storage) {
      storage = std::make_shared<StorageRef>();
      storage->key = items[2]->text;
      storage->dtype = dtype;
      storage->numel = numel;
      storage->location = items[3]->text;
      storage_order_.push_back(storage);
    } else if (storage->dtype != dtype || storage->numel != numel) {
      throw CheckpointError("malformed checkpoint: storage " + storage->key +
                            " is declared with two types or sizes");
    }
    auto value = fresh(Kind::kStorage);
    value->storage = storage;
    return value;
  }

  static std::string hex(uint8_t byte) {
    const char* digits = "0123456789abcdef";
    return {digits[byte >> 4], digits[byte & 15]};
  }

  const ByteSource& source_;
  uint64_t position_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::unordered_map<std::string, std::shared_ptr<StorageRef>> storage_index_;
  std::vector<std::shared_ptr<StorageRef>> storage_order_;
  uint64_t created_ = 0;
};

/// Writes pickle (protocol 2) opcodes: enough for state dicts and optimizer states (dicts,
/// lists, numbers, strings, None and tensor rebuilds).
class PickleWriter {
 public:
  PickleWriter() { out_ += "\x80\x02"; }

  void global(const std::string& module, const std::string& name) {
    out_ += 'c' + module + '\n' + name + '\n';
  }
  void mark() { out_ += '('; }
  void tuple() { out_ += 't'; }
  void empty_tuple() { out_ += ')'; }
  void reduce() { out_ += 'R'; }
  void set_items() { out_ += 'u'; }
  void set_item() { out_ += 's'; }
  void empty_dict() { out_ += '}'; }
  void empty_list() { out_ += ']'; }
  void appends() { out_ += 'e'; }
  void none() { out_ += 'N'; }
  void persistent_id() { out_ += 'Q'; }
  void boolean(bool value) { out_ += value ? '\x88' : '\x89'; }
  void stop() { out_ += '.'; }

  void string(const std::string& text) {
    out_ += 'X';
    append_little_endian<uint32_t>(out_, static_cast<uint32_t>(text.size()));
    out_ += text;
  }

  void integer(int64_t value) {
    if (value >= 0 && value < 256) {
      out_ += 'K';
      out_ += static_cast<char>(value);
    } else if (value >= INT32_MIN && value <= INT32_MAX) {
      out_ += 'J';
      append_little_endian<uint32_t>(out_, static_cast<uint32_t>(value));
    } else {
      out_ += "\x8a\x08";
      append_little_endian<uint64_t>(out_, static_cast<uint64_t>(value));
    }
  }

  void real(double value) {  // BINFLOAT: big-endian IEEE 754
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    out_ += 'G';
    for (int shift = 56; shift >= 0; shift -= 8) out_ += static_cast<char>((bits >> shift) & 0xff);
  }

  void integer_tuple(const std::vector<int64_t>& values) {
    mark();
    for (const auto value : values) integer(value);
    tuple();
  }

  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

}  // namespace reidnet::detail
