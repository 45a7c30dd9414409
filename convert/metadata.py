"""GGUF metadata for a Qwen3.5-family checkpoint: hyperparameters in llama.cpp's key order.

Key order matters only for byte-identical headers; every key here is one llama.cpp's loader reads
(except general.name/size_label, which are informational).
"""

from __future__ import annotations

from typing import Any

import gguf

# The default Qwen3.5 M-RoPE split, for configs that leave it out (as llama.cpp does).
DEFAULT_MROPE_SECTIONS = [11, 11, 10, 0]


def merged_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The text model's hyperparameters: multimodal configs nest them under text_config."""
    return {**config, **config.get("text_config", {})}


def rope_parameters(hp: dict[str, Any]) -> dict[str, Any]:
    rope = dict(hp.get("rope_parameters") or hp.get("rope_scaling") or {})
    if "rope_theta" not in rope and "rope_theta" in hp:
        rope["rope_theta"] = hp["rope_theta"]
    if "partial_rotary_factor" not in rope and "partial_rotary_factor" in hp:
        rope["partial_rotary_factor"] = hp["partial_rotary_factor"]
    return rope


def add_model_metadata(writer: gguf.GGUFWriter, hp: dict[str, Any], *, name: str, size_label: str,
                       n_mtp: int, ftype: gguf.LlamaFileType) -> None:
    """general.* and <arch>.* keys. `n_mtp` MTP layers are appended after the trunk's layers."""
    arch = writer.arch
    n_layer = hp["num_hidden_layers"]
    rope = rope_parameters(hp)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(size_label)
    writer.add_block_count(n_layer + n_mtp)
    if "max_position_embeddings" in hp:
        writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    if "intermediate_size" in hp:
        writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    writer.add_head_count_kv(hp["num_key_value_heads"])
    if "mrope_section" in rope:
        writer.add_rope_dimension_sections((list(rope["mrope_section"]) + [0, 0, 0, 0])[:4])
    if "rope_theta" in rope:
        writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    if "num_experts" in hp:
        writer.add_expert_count(hp["num_experts"])
    if "num_experts_per_tok" in hp:
        writer.add_expert_used_count(hp["num_experts_per_tok"])
    if "head_dim" in hp:
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    writer.add_file_type(ftype)
    if "moe_intermediate_size" in hp:
        writer.add_expert_feed_forward_length(hp["moe_intermediate_size"])
    if "shared_expert_intermediate_size" in hp:
        writer.add_expert_shared_feed_forward_length(hp["shared_expert_intermediate_size"])
    if n_mtp:
        writer.add_nextn_predict_layers(n_mtp)
    # Gated DeltaNet (linear attention) shapes.
    writer.add_ssm_conv_kernel(hp["linear_conv_kernel_dim"])
    writer.add_ssm_state_size(hp["linear_key_head_dim"])
    writer.add_ssm_group_count(hp["linear_num_key_heads"])
    writer.add_ssm_time_step_rank(hp["linear_num_value_heads"])
    writer.add_ssm_inner_size(hp["linear_value_head_dim"] * hp["linear_num_value_heads"])
    if (layer_types := hp.get("layer_types")) is not None:
        recurrent = [t == "linear_attention" for t in layer_types] + [False] * n_mtp
        writer.add_array(f"{arch}.attention.recurrent_layers", recurrent)
    writer.add_full_attention_interval(hp.get("full_attention_interval", 4))
    head_dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 0.25)))
    if "mrope_section" not in rope:
        writer.add_rope_dimension_sections(DEFAULT_MROPE_SECTIONS)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def move_file_type_last(writer: gguf.GGUFWriter, ftype: gguf.LlamaFileType) -> None:
    """llama-quantize re-sets these two keys, which moves them to the end of the metadata."""
    for key in (gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE):
        writer.kv_data[0].pop(key, None)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(ftype)
