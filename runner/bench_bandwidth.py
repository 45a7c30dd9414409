"""`mtprun bench`'s bandwidth figure: how much of the machine's memory bandwidth plain decoding uses.

A decode step of a large model is bound by reading its weights; the share of the measured ceiling
(the backend's own test: threads reading memory on the CPU, device copies on a GPU) says how much
speed is left to find in the kernels rather than in the hardware."""

from __future__ import annotations

from mtprun.runner.models.qwen35 import decode_weight_bytes


def decode_bandwidth(model, decode_tokens_per_s: float) -> dict:
    """Weight bytes a decode step reads, the rate plain decoding reads them at, and (where the backend
    measures it) the ceiling and the share of it used. Run it after peak RSS is read: the test's buffer is large."""
    per_token = decode_weight_bytes(model.hparams, model.loaded.weights)
    out = {"weight_bytes_per_token": per_token, "decode_bytes_per_s": per_token * decode_tokens_per_s,
           "ceiling_bytes_per_s": None, "ceiling_measured": None, "share": None}
    measured = model.memory_bandwidth() if decode_tokens_per_s > 0 else None
    if measured is not None:
        ceiling, what = measured
        out.update(ceiling_bytes_per_s=ceiling, ceiling_measured=what, share=out["decode_bytes_per_s"] / ceiling)
    return out
