"""Which GGML type each tensor gets: the converter's rules and llama-quantize's per-tensor mixes.

Two stages, as in llama.cpp: `convert_hf_to_gguf.py --outtype {f32,f16,bf16,q8_0}` picks a type per
tensor (`converter_type`), and `llama-quantize` turns an f32/f16/bf16 file into a preset such as
Q4_K_M (`QuantizeMix`), bumping sensitive tensors to more bits and falling back where a row is
not a whole number of blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType as FT

from mtprun.runner.errors import MtprunError

# Output types the converter writes itself; the rest are llama-quantize presets applied after.
CONVERTER_OUTTYPES: dict[str, FT] = {
    "f32": FT.ALL_F32, "f16": FT.MOSTLY_F16, "bf16": FT.MOSTLY_BF16, "q8_0": FT.MOSTLY_Q8_0,
}

# llama-quantize presets: file type and the default tensor type.
QUANTIZE_PRESETS: dict[str, tuple[FT, T]] = {
    "f32": (FT.ALL_F32, T.F32),
    "f16": (FT.MOSTLY_F16, T.F16),
    "bf16": (FT.MOSTLY_BF16, T.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, T.Q8_0),
    "q4_0": (FT.MOSTLY_Q4_0, T.Q4_0),
    "q4_1": (FT.MOSTLY_Q4_1, T.Q4_1),
    "q5_0": (FT.MOSTLY_Q5_0, T.Q5_0),
    "q5_1": (FT.MOSTLY_Q5_1, T.Q5_1),
    "q4_k_s": (FT.MOSTLY_Q4_K_S, T.Q4_K),
    "q4_k_m": (FT.MOSTLY_Q4_K_M, T.Q4_K),
    "q5_k_m": (FT.MOSTLY_Q5_K_M, T.Q5_K),
    "q6_k": (FT.MOSTLY_Q6_K, T.Q6_K),
}

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k")

_CONVERTER_TYPE = {FT.ALL_F32: T.F32, FT.MOSTLY_F16: T.F16, FT.MOSTLY_BF16: T.BF16, FT.MOSTLY_Q8_0: T.Q8_0}

# Tensors the converter always keeps in F32 (routers and the DeltaNet conv kernel are tiny and
# precision-sensitive), besides 1-D tensors, norms and anything not named *.weight.
_CONVERTER_F32_SUFFIXES = (".ffn_gate_inp.weight", ".ffn_gate_inp_shexp.weight", ".ssm_conv1d.weight")

_FLOAT_TYPES = (T.F32, T.F16, T.BF16)


def block_size(qtype: T) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def converter_type(name: str, shape: Sequence[int], ftype: FT) -> T:
    """convert_hf_to_gguf.py's type for one tensor (shape in numpy order)."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or name.endswith(_CONVERTER_F32_SUFFIXES) \
            or not name.endswith(".weight"):
        return T.F32
    qtype = _CONVERTER_TYPE[ftype]
    if shape[-1] % block_size(qtype) != 0:
        return T.F16  # gguf-py cannot quantize a partial block; the converter falls back to F16
    return qtype


def preset(type_name: str) -> tuple[FT, T]:
    try:
        return QUANTIZE_PRESETS[type_name.lower()]
    except KeyError:
        raise MtprunError(f"Unknown quantization type {type_name!r}; choose one of "
                          f"{', '.join(QUANTIZE_PRESETS)}.") from None


def ggml_n_dims(ne: Sequence[int]) -> int:
    """ggml's dimension count: trailing size-1 dimensions do not count (at least 1)."""
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return n


def allows_quantization(name: str, ne: Sequence[int]) -> bool:
    """llama-quantize only touches 2-D/3-D weights and leaves norms, routers and conv kernels alone."""
    return (ggml_n_dims(ne) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name and "ssm_conv1d" not in name)


def _layer_of(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def sort_key(name: str) -> tuple[int, str]:
    """llama.cpp's tensor order when quantizing: non-layer tensors first, then by layer, then name."""
    return _layer_of(name), name


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, category in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                          ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                          ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                          ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return category
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    # llama.cpp's layer pattern for extra bits: first and last eighth, and every third in between.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class QuantizeMix:
    """llama-quantize's type choice for every tensor of one file (no imatrix, no overrides).

    Build it with all tensor names, then call `target` once per tensor in `sort_key` order: the
    attention-V and FFN counters advance as llama.cpp's do.
    """

    ftype: FT
    default: T
    n_layer: int  # block count, MTP layers included
    n_expert: int
    n_attention_wv: int
    tied_embeddings: bool
    i_attention_wv: int = 0
    i_ffn_down: int = 0

    @classmethod
    def create(cls, type_name: str, names: Sequence[str], n_layer: int, n_expert: int) -> "QuantizeMix":
        ftype, default = preset(type_name)
        return cls(ftype, default, n_layer, n_expert,
                   n_attention_wv=sum(_category(n) == "attn_v" for n in names),
                   tied_embeddings="output.weight" not in names)

    def target(self, name: str, ne: Sequence[int], current: T) -> T:
        """The type tensor `name` (ggml shape `ne`, stored as `current`) is written in."""
        if not allows_quantization(name, ne):
            return current
        if self.default in _FLOAT_TYPES:
            return self.default
        return self._fallback(ne[0], self._mixed_type(name, ne))

    def _ffn_layer(self, name: str, counter: int) -> int:
        # With experts, llama.cpp reads the layer from the name (expert tensors need not be in order).
        if self.n_expert > 1:
            layer = _layer_of(name)
            if not 0 <= layer < self.n_layer:
                raise MtprunError(f"Cannot tell the layer of tensor {name}.")
            return layer
        return counter

    def _mixed_type(self, name: str, ne: Sequence[int]) -> T:
        ft, new = self.ftype, self.default
        category = _category(name)
        if category == "output" or (self.tied_embeddings and category == "token_embd"):
            if ne[0] % block_size(new) != 0:
                return T.Q8_0
            return new if new == T.Q8_0 else T.Q6_K
        if category == "attn_v":
            if ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _use_more_bits(self.i_attention_wv, self.n_attention_wv):
                new = T.Q6_K
            elif ft == FT.MOSTLY_Q4_K_S and self.i_attention_wv < 4:
                new = T.Q5_K
            if self.n_expert == 8:
                new = T.Q8_0
            self.i_attention_wv += 1
        elif category == "attn_k":
            if self.n_expert == 8:
                new = T.Q8_0
        elif category == "ffn_down":
            layer = self._ffn_layer(name, self.i_ffn_down)
            if ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _use_more_bits(layer, self.n_layer):
                new = T.Q6_K
            elif ft == FT.MOSTLY_Q4_K_S and layer < self.n_layer // 8:
                new = T.Q5_K
            self.i_ffn_down += 1
        elif category == "attn_output":
            if self.n_expert == 8 and ft in (FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M):
                new = T.Q5_K
        return new

    @staticmethod
    def _fallback(ncols: int, qtype: T) -> T:
        """A row that is not a whole number of blocks takes a type with smaller blocks, else F16."""
        if ncols % block_size(qtype) == 0:
            return qtype
        smaller = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}.get(qtype, qtype)
        return smaller if ncols % block_size(smaller) == 0 else T.F16
