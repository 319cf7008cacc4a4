"""Our safetensors files and Python's `safetensors` package (the pinned version) read each other:
(a) a file written by C++ (safetensors_tool write) loads in `safe_open(framework="numpy")` and
`safetensors.torch.load_file` with the expected values and metadata, BF16 included, even though
its tensors after the BF16 one start at odd offsets; (b) files written by
`safetensors.numpy.save_file` (every dtype we support but BF16, which numpy lacks) and
`safetensors.torch.save_file` (BF16) read back in C++ (safetensors_tool dump) with the same
values, shapes, dtypes and metadata."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import safe_open

tool, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)

# --- (a) C++ writes, Python reads ---------------------------------------------------------------
path = os.path.join(work, "from_cpp.safetensors")
subprocess.run([tool, "write", path], check=True)
expected = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1,
    "i64": np.array([np.iinfo(np.int64).min, 0, 1 << 40, np.iinfo(np.int64).max], dtype=np.int64),
    "f32_transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,
    "f32_scalar": np.array(2.5, dtype=np.float32),
}
metadata = {"format": "pt", "config": '{"d": 128}'}
with safe_open(path, framework="numpy") as f:
    assert f.metadata() == metadata, f.metadata()
    assert set(f.keys()) == set(expected) | {"bf16"}, f.keys()
    for name, want in expected.items():
        got = f.get_tensor(name)
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
        assert np.array_equal(got, want), (name, got, want)
loaded = safetensors.torch.load_file(path)
assert loaded["bf16"].dtype == torch.bfloat16
assert torch.equal(loaded["bf16"], torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16))
for name, want in expected.items():
    assert torch.equal(loaded[name], torch.from_numpy(want.copy())), name
print(f"python read {len(loaded)} tensors written by C++")

# --- (b) Python writes, C++ reads --------------------------------------------------------------
rng = np.random.default_rng(0)
arrays = {
    "f64": rng.standard_normal((3, 2)),
    "f32": rng.standard_normal((4, 5)).astype(np.float32),
    "f16": rng.standard_normal(7).astype(np.float16),
    "i64": np.array([np.iinfo(np.int64).min, -3, np.iinfo(np.int64).max], dtype=np.int64),
    "i32": rng.integers(-(2**31), 2**31 - 1, 6, dtype=np.int32),
    "i16": rng.integers(-(2**15), 2**15 - 1, (2, 3), dtype=np.int16),
    "i8": rng.integers(-128, 127, 5, dtype=np.int8),
    "u8": rng.integers(0, 255, 9, dtype=np.uint8),
    "bool": rng.standard_normal(10) > 0,
    "scalar": np.array(-1.25, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
}
torch_names = {np.dtype(np.float64): "Double", np.dtype(np.float32): "Float",
               np.dtype(np.float16): "Half", np.dtype(np.int64): "Long",
               np.dtype(np.int32): "Int", np.dtype(np.int16): "Short", np.dtype(np.int8): "Char",
               np.dtype(np.uint8): "Byte", np.dtype(np.bool_): "Bool"}


def cpp_dump(file):
    out = subprocess.run([tool, "dump", file], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


numpy_path = os.path.join(work, "from_numpy.safetensors")
numpy_metadata = {"written_by": "safetensors.numpy", "note": "naïve"}
safetensors.numpy.save_file(arrays, numpy_path, metadata=numpy_metadata)
dump = cpp_dump(numpy_path)
assert dump["metadata"] == numpy_metadata, dump["metadata"]
assert set(dump["tensors"]) == set(arrays), dump["tensors"].keys()
for name, want in arrays.items():
    got = dump["tensors"][name]
    assert got["dtype"] == torch_names[want.dtype], (name, got["dtype"])
    assert got["shape"] == list(want.shape), (name, got["shape"])
    values = want.reshape(-1)
    if want.dtype.kind == "f":
        values = values.astype(np.float64)  # exact: every value is a float64 too
    assert got["values"] == values.tolist(), (name, got["values"], values)

torch_path = os.path.join(work, "from_torch.safetensors")
bf16 = torch.tensor([[0.5, -1.0, 3.140625], [1e-3, 2.0, -7.5]], dtype=torch.bfloat16)
safetensors.torch.save_file({"bf16": bf16, "f32": torch.ones(2)}, torch_path)
dump = cpp_dump(torch_path)
got = dump["tensors"]["bf16"]
assert got["dtype"] == "BFloat16" and got["shape"] == [2, 3], got
assert got["values"] == bf16.double().reshape(-1).tolist(), got["values"]
assert dump["tensors"]["f32"]["values"] == [1.0, 1.0]
print(f"C++ read {len(arrays)} numpy arrays and a BF16 tensor written by Python")
