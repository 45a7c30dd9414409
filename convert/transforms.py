"""Per-tensor transforms named in models.toml, each with the shape it produces.

Shapes are needed before any data is read, because the GGUF header (with every tensor's shape)
is written first and the tensors are then streamed one at a time.

A transform is row-local when it maps each slice along the first axis on its own, so a tensor can
be streamed in blocks of leading rows. Row-local: add_one, neg_exp (elementwise), v_heads_cols
(permutes within a row) and split_halves on 3-D fused experts (splits within an expert). The rest
move data between rows, so their tensors are read whole: squeeze (could drop the first axis),
v_heads_rows, v_heads_scalar and v_heads_after_qk (reorder rows). Those are DeltaNet tensors, the
largest being Qwen3.5-27B's QKV projection (10240 x 5120, 0.2 GB in float32), far below the
embeddings and output head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    # Both map one input to a list of outputs (a split makes several).
    apply: Callable[[np.ndarray, dict[str, Any]], list[np.ndarray]]
    shape: Callable[[Shape, dict[str, Any]], list[Shape]]
    # Row-local (see above) on inputs of at least this many dimensions; None: never.
    row_local_ndim: int | None = None


def _same_shape(shape: Shape, hp: dict[str, Any]) -> list[Shape]:
    return [shape]


def _linear_heads(hp: dict[str, Any]) -> tuple[int, int, int, int]:
    k_heads, v_heads = hp["linear_num_key_heads"], hp["linear_num_value_heads"]
    return k_heads, v_heads // k_heads, hp["linear_key_head_dim"], hp["linear_value_head_dim"]


def _tile_v_heads(a: np.ndarray, axis: int, k_heads: int, v_per_k: int, head_dim: int) -> np.ndarray:
    """V heads grouped by K head [K0v0 K0v1 .. K1v0 ..] -> tiled [K0v0 K1v0 .. K0v1 K1v1 ..].

    ggml broadcasts K heads over V heads by tiling, so GGUF stores the V heads in tiled order.
    """
    axis %= a.ndim
    split = a.shape[:axis] + (k_heads, v_per_k, head_dim) + a.shape[axis + 1:]
    return np.ascontiguousarray(np.swapaxes(a.reshape(split), axis, axis + 1)).reshape(a.shape)


def _v_heads_rows(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    k, r, _, hv = _linear_heads(hp)
    return [_tile_v_heads(a, 0, k, r, hv)]


def _v_heads_scalar(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    # One value (or one row) per V head: A_log, dt_bias, the alpha/beta projections.
    k, r, _, _ = _linear_heads(hp)
    return [_tile_v_heads(a, 0, k, r, 1)]


def _v_heads_after_qk(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    # Rows are [q heads, k heads, v heads] (QKV projection, conv1d channels): reorder only V.
    k, r, hk, hv = _linear_heads(hp)
    qk = 2 * k * hk
    return [np.concatenate([a[:qk], _tile_v_heads(a[qk:], 0, k, r, hv)], axis=0)]


def _v_heads_cols(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    k, r, _, hv = _linear_heads(hp)
    return [_tile_v_heads(a, 1, k, r, hv)]


def _add_one(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    # HF stores these RMSNorm weights zero-centred (the model multiplies by 1 + w); GGUF stores 1 + w.
    return [a + a.dtype.type(1)]


def _neg_exp(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    # A_log -> A = -exp(A_log), the DeltaNet decay rate the GGUF graph uses directly. Computed in
    # float64 and rounded once: the correctly rounded expf that llama.cpp's (torch's scalar) path
    # gives; numpy's float32 exp is off by an ulp for some inputs.
    return [-np.exp(a.astype(np.float64)).astype(a.dtype)]


def _squeeze(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    return [a.squeeze()]


def _squeeze_shape(shape: Shape, hp: dict[str, Any]) -> list[Shape]:
    return [tuple(n for n in shape if n != 1)]


def _split_halves(a: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    # Fused experts gate_up [E, 2F, D] -> gate [E, F, D], up [E, F, D].
    half = a.shape[-2] // 2
    return [np.ascontiguousarray(a[..., :half, :]), np.ascontiguousarray(a[..., half:, :])]


def _split_halves_shape(shape: Shape, hp: dict[str, Any]) -> list[Shape]:
    half = shape[:-2] + (shape[-2] // 2, shape[-1])
    return [half, half]


TRANSFORMS: dict[str, Transform] = {
    "add_one": Transform(_add_one, _same_shape, row_local_ndim=1),
    "neg_exp": Transform(_neg_exp, _same_shape, row_local_ndim=1),
    "squeeze": Transform(_squeeze, _squeeze_shape),
    "v_heads_rows": Transform(_v_heads_rows, _same_shape),
    "v_heads_scalar": Transform(_v_heads_scalar, _same_shape),
    "v_heads_after_qk": Transform(_v_heads_after_qk, _same_shape),
    "v_heads_cols": Transform(_v_heads_cols, _same_shape, row_local_ndim=2),
    "split_halves": Transform(_split_halves, _split_halves_shape, row_local_ndim=3),
}


def output_shapes(names: Sequence[str], shape: Shape, hp: dict[str, Any]) -> list[Shape]:
    shapes = [tuple(shape)]
    for name in names:
        shapes = [s for sh in shapes for s in TRANSFORMS[name].shape(sh, hp)]
    return shapes


def row_local(names: Sequence[str], ndim: int) -> bool:
    """Whether the transforms, applied to an `ndim`-D tensor, can be applied to blocks of its rows
    (all of them keep the number of dimensions)."""
    return all((n := TRANSFORMS[name].row_local_ndim) is not None and ndim >= n for name in names)


def apply(names: Sequence[str], array: np.ndarray, hp: dict[str, Any]) -> list[np.ndarray]:
    arrays = [array]
    for name in names:
        arrays = [out for a in arrays for out in TRANSFORMS[name].apply(a, hp)]
    return arrays
