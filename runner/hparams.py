"""Hyperparameters of a Qwen3.5 / Qwen3.5-MoE GGUF, read from its `{arch}.*` metadata."""

from __future__ import annotations

from dataclasses import dataclass

from mtprun.runner.errors import MtprunError
from mtprun.runner.gguf_file import GGUFFile

SUPPORTED_ARCHS = ("qwen35", "qwen35moe")


@dataclass(frozen=True)
class HParams:
    arch: str
    n_layer: int  # trunk layers; the MTP blocks follow them (block_count = n_layer + n_nextn)
    n_nextn: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_base: float
    n_rot: int
    rope_sections: tuple[int, int, int, int]
    recurrent: tuple[bool, ...]  # per block, MTP blocks included (always False there)
    ssm_conv: int
    ssm_state: int
    ssm_groups: int  # key heads of the DeltaNet layers
    ssm_v_heads: int
    ssm_inner: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0


def read_hparams(f: GGUFFile) -> HParams:
    arch = f.arch
    if arch not in SUPPORTED_ARCHS:
        raise MtprunError(
            f"{f.path}: unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})."
        )

    def key(name: str, default=...):  # noqa: ANN001 - thin accessor
        return f.get(f"{arch}.{name}") if default is ... else f.get(f"{arch}.{name}", default)

    n_block = int(key("block_count"))
    n_nextn = int(key("nextn_predict_layers", 0))
    n_layer = n_block - n_nextn
    if n_layer <= 0 or n_nextn < 0:
        raise MtprunError(f"{f.path}: block_count {n_block} leaves no trunk layers after {n_nextn} MTP blocks.")
    if f.has(f"{arch}.attention.recurrent_layers"):
        recurrent = tuple(bool(x) for x in key("attention.recurrent_layers"))
        if len(recurrent) != n_block:
            raise MtprunError(f"{f.path}: attention.recurrent_layers has {len(recurrent)} entries for {n_block} blocks.")
    else:
        interval = int(key("full_attention_interval", 4))
        recurrent = tuple(i < n_layer and (i + 1) % interval != 0 for i in range(n_block))
    sections = [int(x) for x in key("rope.dimension_sections", [0, 0, 0, 0])]
    sections = (sections + [0, 0, 0, 0])[:4]
    head_dim = int(key("attention.key_length"))
    embd = f.tensors.get("token_embd.weight")
    if embd is None:
        raise MtprunError(f"{f.path}: required tensor 'token_embd.weight' is missing.")
    return HParams(
        arch=arch,
        n_layer=n_layer,
        n_nextn=n_nextn,
        n_embd=int(key("embedding_length")),
        n_vocab=int(embd.shape[0]),
        n_ctx_train=int(key("context_length", 0)),
        n_head=int(key("attention.head_count")),
        n_head_kv=int(key("attention.head_count_kv")),
        head_dim=head_dim,
        rms_eps=float(key("attention.layer_norm_rms_epsilon")),
        rope_base=float(key("rope.freq_base", 10000.0)),
        n_rot=int(key("rope.dimension_count", head_dim)),
        rope_sections=tuple(sections),  # type: ignore[arg-type]
        recurrent=recurrent,
        ssm_conv=int(key("ssm.conv_kernel")),
        ssm_state=int(key("ssm.state_size")),
        ssm_groups=int(key("ssm.group_count")),
        ssm_v_heads=int(key("ssm.time_step_rank")),
        ssm_inner=int(key("ssm.inner_size")),
        n_ff=int(key("feed_forward_length", 0)),
        n_expert=int(key("expert_count", 0)),
        n_expert_used=int(key("expert_used_count", 0)),
        n_ff_exp=int(key("expert_feed_forward_length", 0)),
        n_ff_shexp=int(key("expert_shared_feed_forward_length", 0)),
    )
