"""Lazy reading of a Hugging Face checkpoint directory: config.json plus (sharded) safetensors.

Only headers are read up front; `load` and `load_rows` read one tensor, or a block of its rows,
when asked, so a conversion holds at most one tensor in memory at a time.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mtprun.runner.errors import MtprunError

# safetensors dtypes we can widen; everything else (FP8, ints) is refused with a clear message.
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
SUPPORTED_DTYPES = ("BF16", "F16", "F32", "F64")


@dataclass(frozen=True)
class TensorRef:
    """Where one checkpoint tensor lives: its shard, dtype, shape and byte range."""

    name: str
    shard: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the shard
    nbytes: int


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header (order kept) and where the data section starts."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            size = path.stat().st_size
            if 8 + n > size:
                raise ValueError("header runs past the end of the file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MtprunError(f"Shard {path} is not a readable safetensors file ({e}).") from e
    if not isinstance(header, dict):
        raise MtprunError(f"Shard {path} is not a readable safetensors file (bad header).")
    return header, 8 + n


def _validate_shard(path: Path) -> None:
    """Let the safetensors library check offsets and sizes: it rejects truncated or overlapping data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as e:  # the library raises its own SafetensorError types
        raise MtprunError(f"Shard {path} is corrupt or truncated ({e}).") from e


class Checkpoint:
    """A checkpoint directory: its config and an index of every tensor across its shards."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise MtprunError(f"Checkpoint directory {self.directory} does not exist.")
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise MtprunError(f"Checkpoint directory {self.directory} has no config.json.")
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise MtprunError(f"{config_path} is not valid JSON ({e}).") from e
        self.tensors: dict[str, TensorRef] = {}
        self._expected: set[str] | None = None  # tensor names an index file promises
        for shard in self._shards():
            self._index_shard(shard)

    def _shards(self) -> list[Path]:
        """Shard files, in the order llama.cpp reads them (sorted file names)."""
        index_path = self.directory / "model.safetensors.index.json"
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise MtprunError(f"{index_path} is not a valid safetensors index ({e}).") from e
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (self.directory / n).is_file()]
            if missing:
                raise MtprunError(f"Checkpoint {self.directory} is missing shard(s): {', '.join(missing)}.")
            self._expected = set(weight_map)
            return [self.directory / n for n in names]
        shards = sorted(p for p in self.directory.iterdir()
                        if p.name.startswith("model") and p.name.endswith(".safetensors"))
        if not shards:
            raise MtprunError(f"Checkpoint directory {self.directory} has no model*.safetensors files.")
        return shards

    def _index_shard(self, shard: Path) -> None:
        _validate_shard(shard)
        header, data_start = _read_header(shard)
        # Tensors in name order within each shard, as safetensors and llama.cpp list them.
        for name in sorted(k for k in header if k != "__metadata__"):
            meta = header[name]
            begin, end = meta["data_offsets"]
            self.tensors[name] = TensorRef(name, shard, meta["dtype"], tuple(meta["shape"]),
                                           data_start + begin, end - begin)

    def check_complete(self) -> None:
        """Every tensor the index promises must be in some shard."""
        if self._expected is None:
            return
        missing = sorted(self._expected - set(self.tensors))
        if missing:
            raise MtprunError(f"Checkpoint {self.directory} lacks {len(missing)} tensor(s) its index lists, "
                              f"e.g. {missing[0]}; a shard is missing or incomplete.")

    def names(self) -> Iterator[str]:
        return iter(self.tensors)

    def load(self, name: str) -> np.ndarray:
        """One tensor as float32 (float16 stays float16, as llama.cpp keeps it)."""
        shape = self.tensors[name].shape
        return self.load_rows(name, 0, shape[0]) if shape else self.load_rows(name, 0, 1).reshape(())

    def load_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Slice [start:stop] of a tensor's first axis, widened as `load` does.

        Plain file reads, not mmap: a mapping's pages count toward the process's RSS until it is
        unmapped, while the page cache behind a read does not.
        """
        ref = self.tensors[name]
        if ref.dtype not in SUPPORTED_DTYPES:
            raise MtprunError(f"Tensor {name} has dtype {ref.dtype}; supported dtypes are "
                              f"{', '.join(SUPPORTED_DTYPES)}.")
        if ref.offset + ref.nbytes > ref.shard.stat().st_size:
            raise MtprunError(f"Shard {ref.shard} is truncated (tensor {name}).")
        shape = (stop - start, *ref.shape[1:])
        row_bytes = ref.nbytes // max(ref.shape[0], 1) if ref.shape else ref.nbytes
        raw = _read(ref.shard, ref.offset + start * row_bytes, (stop - start) * row_bytes)
        if ref.dtype == "BF16":
            return widen_bf16(raw.view("<u2")).reshape(shape)
        arr = raw.view(np.dtype(_NUMPY_DTYPES[ref.dtype]).newbyteorder("<")).reshape(shape)
        return arr.astype(np.float16 if ref.dtype == "F16" else np.float32, copy=False)  # the buffer is ours


def _read(path: Path, offset: int, nbytes: int) -> np.ndarray:
    buf = np.empty(nbytes, np.uint8)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        done = 0
        while done < nbytes:  # one read() returns at most ~2 GiB on Linux
            n = f.readinto(view[done:])
            if not n:
                raise MtprunError(f"Shard {path} is truncated.")
            done += n
    return buf


def widen_bf16(bits: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """bfloat16 bit patterns -> float32 (numpy has no bfloat16: the 16 bits become the top half
    of a float32). Done in chunks so the only full-size array is the result."""
    out = np.empty(bits.shape, np.uint32)
    for i in range(0, bits.size, chunk):
        part = out[i:i + chunk]
        part[...] = bits[i:i + chunk]
        part <<= 16
    return out.view(np.float32)
