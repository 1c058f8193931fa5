#!/usr/bin/python3
"""Generate the safetensors interop fixture for unroll's tests.

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_safetensors_fixtures.py

writes ``tests/fixtures/torch_reference.safetensors`` and, beside it,
``tests/fixtures/torch_reference.json`` with the values unroll must read back
exactly.  An optional argument overrides the output directory.  The output is
deterministic (fixed torch.manual_seed).

Debian has no python safetensors package, so the file is laid out here with
struct + json exactly the way the safetensors library (its Rust core, which
the Python package wraps) writes one:

  * 8 bytes: the header size N as a little-endian u64;
  * N bytes: compact JSON (no spaces), "__metadata__" first, then one entry
    per tensor with keys in the order dtype, shape, data_offsets, padded
    with spaces to a multiple of 8;
  * the tensors' little-endian bytes back to back, ordered by descending
    dtype alignment rank (I64, then F64, then F32) and then by name, which is
    also the order of the header entries.

Expected values file::

    {"torch_version": "...", "file": "torch_reference.safetensors",
     "metadata": {"k": "v", ...},
     "tensors": [{"name": ..., "dtype": "float32"|"float64"|"int64",
                  "shape": [...], "data": [...]}, ...]}   # in file order

Floats are written with repr (Python's json does) so they round-trip; the
float32 values are exact float32 numbers widened to double.
"""

import json
import os
import struct
import sys

import torch

SEED = 20240611
DEFAULT_DIR = os.path.join("tests", "fixtures")
STEM = "torch_reference"

# safetensors dtype name, struct code, and rank in the library's dtype enum (sorted descending on write).
DTYPES = {
    torch.float32: ("F32", "f", 0),
    torch.float64: ("F64", "d", 1),
    torch.int64: ("I64", "q", 2),
}


def make_tensors():
    g = torch.Generator().manual_seed(SEED)
    special = torch.tensor(
        [-0.0, 1.401298464324817e-45, 3.4028234663852886e38, 1.0 / 3.0, -2.5], dtype=torch.float32
    )  # negative zero, the smallest subnormal, the largest finite float32, a rounded value
    return {
        "rnn.weight_ih_l0": torch.randn(4, 3, generator=g, dtype=torch.float32),
        "rnn.bias_ih_l0": torch.randn(4, generator=g, dtype=torch.float32),
        "special": special,
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "table": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "scale": torch.tensor(0.1, dtype=torch.float64),  # 0-d
        "index": torch.tensor([-3, 0, 2**62 + 1, -(2**63), 2**63 - 1], dtype=torch.int64),
        "step": torch.tensor(12345, dtype=torch.int64),  # 0-d
    }


METADATA = {"format": "pt", "note": "unicode \u00e9 \u2713", "empty": ""}


def layout(tensors, metadata):
    """(file bytes, [names in file order]) as the safetensors library lays them out."""
    names = sorted(tensors, key=lambda n: (-DTYPES[tensors[n].dtype][2], n))
    header = {}
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    chunks = []
    offset = 0
    for name in names:
        t = tensors[name].contiguous()
        st_name, code, _ = DTYPES[t.dtype]
        values = t.flatten().tolist()
        data = struct.pack("<%d%s" % (len(values), code), *values)
        header[name] = {"dtype": st_name, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks), names


def read_back(blob):
    """Parses the blob independently of layout() (the way a reader would) into {name: tensor}."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    buf = blob[8 + n :]
    out = {}
    for name, e in header.items():
        dtype = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}[e["dtype"]]
        begin, end = e["data_offsets"]
        raw = bytearray(buf[begin:end])
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(e["shape"]).clone()
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR
    tensors = make_tensors()
    blob, names = layout(tensors, METADATA)

    back = read_back(blob)
    assert list(back) == names
    for name, t in tensors.items():
        b = back[name]
        assert b.dtype == t.dtype and b.shape == t.shape, name
        assert torch.equal(b, t), name
        if t.is_floating_point():  # bit-exact, including the sign of zero
            assert torch.equal(torch.signbit(b), torch.signbit(t)), name

    expected = {
        "torch_version": torch.__version__,
        "file": STEM + ".safetensors",
        "metadata": METADATA,
        "tensors": [
            {
                "name": name,
                "dtype": str(tensors[name].dtype).replace("torch.", ""),
                "shape": list(tensors[name].shape),
                "data": tensors[name].flatten().tolist(),
            }
            for name in names
        ],
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, STEM + ".safetensors"), "wb") as f:
        f.write(blob)
    with open(os.path.join(out_dir, STEM + ".json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote %s (%d bytes) and %s" % (STEM + ".safetensors", len(blob), STEM + ".json"))


if __name__ == "__main__":
    main()
