"""Converter: Hugging Face safetensors checkpoints to GGUF files that keep the MTP head."""

from mtprun.convert.converter import convert_checkpoint
from mtprun.convert.requantize import quantize_gguf

__all__ = ["convert_checkpoint", "quantize_gguf"]
