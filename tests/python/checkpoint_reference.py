"""Writes the checkpoint files of tests/test_checkpoint.cpp into the folder given as argv[1].

Real checkpoints, written by Debian's torch: torchvision's resnet50 state_dict and an ft_net
state_dict with non-trivial BatchNorm statistics (zip format; the same in the legacy format,
nested with DataParallel's prefix, and in fp16), small files covering every dtype, strides,
storage offsets and shared storages (zip, legacy, safetensors), one saved "from CUDA",
malicious pickles, and truncated, garbage and non-checkpoint files. outputs.pt holds the
eval-mode outputs the C++ side must reproduce.
"""
import collections
import importlib.util
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import zipfile
import zlib

import torch

from reference_models import FtNet, randomize_batchnorm_statistics, resnet

MARKER = "executed_marker"  # created only if a malicious pickle runs


class RunsShellCommand:
    """Unpickling this calls os.system: what a safe loader must refuse."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def small_tensors():
    generator = torch.Generator().manual_seed(11)
    big = torch.randn(6, 4, generator=generator)
    base = torch.randn(3, 5, generator=generator)
    tensors = collections.OrderedDict()
    tensors["float32"] = torch.randn(2, 3, generator=generator)
    tensors["transposed"] = base.t()                  # strides (1, 5)
    tensors["shared_base"] = big
    tensors["offset_view"] = big[2:5]                  # storage offset 8, shares big's storage
    tensors["column_view"] = big[:, 1]                 # stride 4, offset 1
    tensors["float64"] = torch.randn(4, dtype=torch.float64, generator=generator)
    tensors["float16"] = torch.randn(3, 2, generator=generator).half()
    tensors["bfloat16"] = torch.randn(5, generator=generator).bfloat16()
    tensors["int64"] = torch.arange(-3, 4, dtype=torch.int64) * 1_000_000_007
    tensors["int32"] = torch.arange(-2, 3, dtype=torch.int32)
    tensors["int16"] = torch.tensor([-300, 7, 300], dtype=torch.int16)
    tensors["int8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    tensors["uint8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    tensors["bool"] = torch.tensor([True, False, True])
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, 3)
    return tensors


def write_safetensors(path, tensors):
    """The safetensors layout (no package needed): u64 header size, JSON header, raw data."""
    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


class FakeStorage:
    """A storage named only by its persistent id, for hand-built archives."""

    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class FakeTensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, (self.storage.numel,), (1,), False, collections.OrderedDict()))


class ArchivePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def zip_header(signature, name, size, crc, offset=None):
    """A stored (uncompressed) zip local header, or a central directory record with `offset`."""
    common = struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0x21, crc, size, size, len(name), 0)
    if offset is None:
        return struct.pack("<I", signature) + common + name
    return (struct.pack("<IH", signature, 20) + common +
            struct.pack("<HHHII", 0, 0, 0, 0, offset) + name)


def write_shared_record_zip(path, copies, numel):
    """`copies` central directory entries, all naming one record of `numel` floats: a reader
    that gives each entry its own buffer needs `copies` times the file's size."""
    storages = [FakeStorage(str(i), numel) for i in range(copies)]
    buffer = io.BytesIO()
    ArchivePickler(buffer, protocol=2).dump(
        collections.OrderedDict((f"t{i}", FakeTensor(s)) for i, s in enumerate(storages)))
    pickled = buffer.getvalue()
    data = bytes(4 * numel)
    out = bytearray()
    entries = []  # (name, size, crc, offset)
    for name, payload in ((b"archive/data.pkl", pickled), (b"archive/data/0", data)):
        entries.append((name, len(payload), zlib.crc32(payload), len(out)))
        out += zip_header(0x04034B50, name, len(payload), zlib.crc32(payload)) + payload
    record = entries[1]
    for i in range(1, copies):
        entries.append((f"archive/data/{i}".encode(), record[1], record[2], record[3]))
    directory = b"".join(zip_header(0x02014B50, n, size, crc, offset) for n, size, crc, offset in entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory),
                      len(out), 0)
    with open(path, "wb") as f:
        f.write(bytes(out) + directory + end)


def write_overlapping_safetensors(path, copies, numel, shift):
    """`copies` entries over the same bytes (each `shift` bytes after the previous)."""
    header = {f"t{i}": {"dtype": "F32", "shape": [numel],
                        "data_offsets": [i * shift, i * shift + 4 * numel]} for i in range(copies)}
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + bytes(4 * numel + copies * shift))


def write_torchscript_optimizer(path, body):
    """A TorchScript archive whose __setstate__ runs `body` when torch::load reads it."""
    source = f"""
import torch
class Payload(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.x = 1
    @torch.jit.export
    def __getstate__(self):
        return (self.x, self.training)
    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]):
        {body}
        self.x = state[0]
        self.training = state[1]
    def forward(self, x):
        return x
"""
    folder = os.path.dirname(path)
    module_name = os.path.splitext(os.path.basename(path))[0] + "_module"
    with open(os.path.join(folder, module_name + ".py"), "w") as f:  # TorchScript reads source files
        f.write(source)
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(folder, module_name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    torch.jit.script(module.Payload()).save(path)


def write_crafted_files(path):
    """Files that must be refused, or read within bounded memory."""
    write_shared_record_zip(path("shared_record.pth"), copies=400, numel=1 << 20)
    write_overlapping_safetensors(path("same_bytes.safetensors"), copies=400, numel=1 << 18, shift=0)
    write_overlapping_safetensors(path("overlapping.safetensors"), copies=2, numel=4, shift=8)
    data = bytearray(open(path("tensors.pth"), "rb").read())
    with zipfile.ZipFile(path("tensors.pth")) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length] ^= 0x01
    with open(path("crc_mismatch.pth"), "wb") as f:
        f.write(bytes(data))
    # Views with more elements than their storages: one float seen as 2^19 x 512 (stride 0,
    # 1 GiB if materialised) in a 1 KB file, and 20 elements laid over 8 (overlapping strides).
    torch.save({"qf": torch.zeros(2, 512), "gf": torch.zeros(1).expand(1 << 19, 512)},
               path("expanded_view.pth"))
    torch.save({"overlap": torch.arange(8.0).as_strided((5, 4), (1, 1))}, path("overlapping_view.pth"))
    write_torchscript_optimizer(path("torchscript_prints.pt"), 'print("REIDNET_PAYLOAD_RAN")')
    write_torchscript_optimizer(path("torchscript_loops.pt"), "while True:\n            pass")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = lambda name: os.path.join(out, name)
    marker = path(MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    generator = torch.Generator().manual_seed(20261126)
    torch.manual_seed(5)
    image = torch.randn(2, 3, 128, 64, generator=generator)
    outputs = {"input": image}

    with torch.no_grad():
        backbone = resnet(50).eval()
        randomize_batchnorm_statistics(backbone, generator)
        torch.save(backbone.state_dict(), path("resnet50.pth"))
        outputs["resnet50/logits"] = backbone(image)

        net = FtNet(751).eval()
        randomize_batchnorm_statistics(net, generator)
        state = net.state_dict()
        torch.save(state, path("ft_net.pth"))
        outputs["ft_net/logits"] = net(image)
        outputs["ft_net/embed"] = net.embed(image)
        save_legacy(state, path("ft_net_legacy.pth"))
        torch.save({"epoch": 3, "state_dict": collections.OrderedDict(
            ("module." + k, v) for k, v in state.items())}, path("ft_net_nested_dataparallel.pth"))
        half = collections.OrderedDict(
            (k, v.half() if v.is_floating_point() else v) for k, v in state.items())
        torch.save(half, path("ft_net_fp16.pth"))
        net.load_state_dict(torch.load(path("ft_net_fp16.pth")))
        outputs["ft_net_fp16/logits"] = net(image)

        tensors = small_tensors()
        torch.save(tensors, path("tensors.pth"))
        save_legacy(tensors, path("tensors_legacy.pth"))
        write_safetensors(path("tensors.safetensors"),
                          collections.OrderedDict((k, v) for k, v in tensors.items()
                                                  if k not in ("offset_view", "column_view")))
        torch.save({k: v.contiguous().clone() for k, v in tensors.items()},
                   path("tensors_expected.pt"))

    # Saved from a CUDA device: the location tag says cuda:0 (no GPU needed to write it).
    original_location_tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(collections.OrderedDict(weight=torch.arange(6.0).reshape(2, 3)),
                   path("cuda_saved.pth"))
    finally:
        torch.serialization.location_tag = original_location_tag

    # Malicious files: unpickling them would run a shell command creating the marker.
    evil = {"weight": torch.ones(2), "payload": RunsShellCommand("touch " + marker)}
    torch.save(evil, path("malicious.pth"))                            # GLOBAL posix.system
    torch.save(evil, path("malicious_protocol4.pth"), pickle_protocol=4)  # STACK_GLOBAL
    save_legacy(evil, path("malicious_legacy.pth"))
    torch.save({"epoch": 3, "state_dict": collections.OrderedDict(
        weight=torch.ones(2), payload=RunsShellCommand("touch " + marker))},
        path("malicious_nested.pth"))

    # Truncated, garbage and non-checkpoint files.
    for name in ("tensors.pth", "tensors_legacy.pth", "tensors.safetensors"):
        data = open(path(name), "rb").read()
        stem, ext = os.path.splitext(name)
        with open(path(f"{stem}_truncated{ext}"), "wb") as f:
            f.write(data[: len(data) * 2 // 3])
    with open(path("garbage.bin"), "wb") as f:
        f.write(torch.randint(0, 256, (4096,), generator=generator, dtype=torch.uint8)
                .numpy().tobytes())
    open(path("empty.pth"), "wb").close()
    with open(path("text.pth"), "w") as f:
        f.write("this is not a checkpoint, just some text\n" * 4)
    torch.save([1, 2, 3], path("list.pth"))
    torch.save({"epoch": 3, "lr": 0.1}, path("scalars.pth"))
    with tarfile.open(path("tar_format.pth"), "w") as archive:
        payload = b"storages"
        info = tarfile.TarInfo("storages")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))

    write_crafted_files(path)
    torch.save(outputs, path("outputs.pt"))
    if os.path.exists(marker):
        raise SystemExit("the marker exists after writing the fixtures")


if __name__ == "__main__":
    main()
