"""Writing altered copies of GGUF files (a tensor dropped or reshaped, metadata changed) for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def copy_gguf(src: Path, dst: Path, drop: set[str] = frozenset(), truncate_rows: set[str] = frozenset(),
              metadata: dict[str, Any] | None = None) -> Path:
    reader = GGUFReader(src)
    metadata = metadata or {}
    arch = metadata.get("general.architecture", reader.fields["general.architecture"].contents())
    writer = GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = metadata.get(key, field.contents())
        sub = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        if t.name in drop:
            continue
        data = np.asarray(t.data)  # NumPy order; quantized tensors as rows of block bytes
        if t.name in truncate_rows:  # one row fewer: a tensor of the wrong shape
            data = data[:-1]
        writer.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
