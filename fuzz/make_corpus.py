"""Regenerates the fuzzer's starting corpus (fuzz/corpus/): small checkpoints in every container
and structure the reader accepts, plus the refused kinds. Run with Debian's python3:
    python3 fuzz/make_corpus.py fuzz/corpus
"""
import collections
import os
import shutil
import struct
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import checkpoint_reference  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(3)
    small = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = small.state_dict()  # an OrderedDict with _metadata
    torch.save(state, os.path.join(out, "state_dict_zip.pth"))
    torch.save(state, os.path.join(out, "state_dict_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save({"epoch": 1, "model": collections.OrderedDict(("module." + k, v) for k, v in state.items())},
               os.path.join(out, "nested_dataparallel.pth"))
    torch.save(state, os.path.join(out, "state_dict_protocol4.pth"), pickle_protocol=4)
    torch.save(collections.OrderedDict(w=torch.nn.Parameter(torch.ones(2, 2))),
               os.path.join(out, "parameter.pth"))
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint_reference_main(scratch)
        for name in ("tensors.pth", "tensors_legacy.pth", "tensors.safetensors", "cuda_saved.pth",
                     "malicious.pth", "malicious_protocol4.pth", "malicious_legacy.pth",
                     "list.pth", "scalars.pth", "tensors_truncated.pth"):
            shutil.copy(os.path.join(scratch, name), os.path.join(out, name))
    # Shapes of hostile files, small: records shared by many entries, overlapping
    # safetensors ranges, a CRC mismatch, a TorchScript archive, an optimizer state.
    checkpoint_reference.write_shared_record_zip(os.path.join(out, "shared_record.pth"), copies=6, numel=8)
    checkpoint_reference.write_overlapping_safetensors(
        os.path.join(out, "overlapping.safetensors"), copies=3, numel=4, shift=8)
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(os.path.join(out, "tensors.pth"), os.path.join(scratch, "tensors.pth"))
        checkpoint_reference.write_crafted_files(lambda name: os.path.join(scratch, name))
        for name in ("crc_mismatch.pth", "torchscript_prints.pt"):
            shutil.copy(os.path.join(scratch, name), os.path.join(out, name))
    layer = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.ones(1, 3)).sum().backward()
    sgd.step()
    torch.save(sgd.state_dict(), os.path.join(out, "optimizer_state.pt"))
    with open(os.path.join(out, "tensors.pth"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "zip64_end_record.pth"), "wb") as f:
        f.write(to_zip64(data))


def to_zip64(data):
    """The same archive with a ZIP64 end record, locator and saturated classic end record."""
    end = len(data) - 22
    assert struct.unpack_from("<I", data, end)[0] == 0x06054B50
    count, size, offset = struct.unpack_from("<HII", data, end + 10)
    record_at = end
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, record_at, 1)
    classic = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:end] + record + locator + classic


def checkpoint_reference_main(folder):
    """Only the small files of checkpoint_reference.py."""
    tensors = checkpoint_reference.small_tensors()
    torch.save(tensors, os.path.join(folder, "tensors.pth"))
    torch.save(tensors, os.path.join(folder, "tensors_legacy.pth"), _use_new_zipfile_serialization=False)
    checkpoint_reference.write_safetensors(
        os.path.join(folder, "tensors.safetensors"),
        collections.OrderedDict((k, v) for k, v in tensors.items() if "view" not in k))
    data = open(os.path.join(folder, "tensors.pth"), "rb").read()
    open(os.path.join(folder, "tensors_truncated.pth"), "wb").write(data[: len(data) // 2])
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(collections.OrderedDict(weight=torch.arange(6.0)), os.path.join(folder, "cuda_saved.pth"))
    finally:
        torch.serialization.location_tag = original
    evil = {"weight": torch.ones(2), "payload": checkpoint_reference.RunsShellCommand("true")}
    torch.save(evil, os.path.join(folder, "malicious.pth"))
    torch.save(evil, os.path.join(folder, "malicious_protocol4.pth"), pickle_protocol=4)
    torch.save(evil, os.path.join(folder, "malicious_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save([1, 2, 3], os.path.join(folder, "list.pth"))
    torch.save({"epoch": 3, "lr": 0.1}, os.path.join(folder, "scalars.pth"))


if __name__ == "__main__":
    main()
