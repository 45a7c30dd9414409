"""Qwen3.5 and Qwen3.5-MoE (GGUF archs `qwen35`, `qwen35moe`): the trunk and its MTP head as graphs.

Trunk: Gated DeltaNet layers and gated full-attention layers (partial interleaved M-RoPE), each
followed by a SwiGLU FFN (dense, or routed experts plus a sigmoid-gated shared expert). The hidden
state after the final norm (`h_nextn`) feeds both the output head and the MTP head.

MTP head (llama.cpp's draft-mtp semantics): at position p it reads the token at p and the trunk's
final-normed state at p-1, `eh_proj(concat(enorm(embed(tok)), hnorm(h)))`, runs one gated
full-attention block with its own KV cache, then `shared_head.norm` (or `output_norm`) and the
shared output head; it predicts the token at p+1. Its weights are named with an `mtp/` prefix so
that a sidecar file can supply them next to a trunk from another file.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mtprun.runner.graph import Graph, Ref, StateSpec, WeightTensor
from mtprun.runner.hparams import HParams

MTP_PREFIX = "mtp/"


def _attention_tensors(hp: HParams, p: str) -> dict[str, tuple[int, ...]]:
    d, hd = hp.n_embd, hp.head_dim
    return {
        f"{p}.attn_q.weight": (2 * hp.n_head * hd, d),
        f"{p}.attn_k.weight": (hp.n_head_kv * hd, d),
        f"{p}.attn_v.weight": (hp.n_head_kv * hd, d),
        f"{p}.attn_output.weight": (d, hp.n_head * hd),
        f"{p}.attn_q_norm.weight": (hd,),
        f"{p}.attn_k_norm.weight": (hd,),
    }


def _ffn_tensors(hp: HParams, p: str) -> dict[str, tuple[int, ...]]:
    d = hp.n_embd
    if not hp.is_moe:
        return {f"{p}.ffn_gate.weight": (hp.n_ff, d), f"{p}.ffn_up.weight": (hp.n_ff, d), f"{p}.ffn_down.weight": (d, hp.n_ff)}
    e, fe = hp.n_expert, hp.n_ff_exp
    out = {
        f"{p}.ffn_gate_inp.weight": (e, d),
        f"{p}.ffn_gate_exps.weight": (e, fe, d),
        f"{p}.ffn_up_exps.weight": (e, fe, d),
        f"{p}.ffn_down_exps.weight": (e, d, fe),
    }
    if hp.n_ff_shexp:
        fs = hp.n_ff_shexp
        out.update({
            f"{p}.ffn_gate_shexp.weight": (fs, d),
            f"{p}.ffn_up_shexp.weight": (fs, d),
            f"{p}.ffn_down_shexp.weight": (d, fs),
            f"{p}.ffn_gate_inp_shexp.weight": (1, d),
        })
    return out


def trunk_tensors(hp: HParams, tied: bool) -> dict[str, tuple[int, ...]]:
    """Every tensor the trunk needs, with its NumPy-order shape."""
    d, s = hp.n_embd, hp.ssm_state
    out: dict[str, tuple[int, ...]] = {"token_embd.weight": (hp.n_vocab, d), "output_norm.weight": (d,)}
    if not tied:
        out["output.weight"] = (hp.n_vocab, d)
    conv_channels = 2 * hp.ssm_groups * s + hp.ssm_v_heads * s
    for il in range(hp.n_layer):
        p = f"blk.{il}"
        out[f"{p}.attn_norm.weight"] = (d,)
        out[f"{p}.post_attention_norm.weight"] = (d,)
        if hp.recurrent[il]:
            out.update({
                f"{p}.attn_qkv.weight": (conv_channels, d),
                f"{p}.attn_gate.weight": (hp.ssm_v_heads * s, d),
                f"{p}.ssm_conv1d.weight": (conv_channels, hp.ssm_conv),
                f"{p}.ssm_dt.bias": (hp.ssm_v_heads,),
                f"{p}.ssm_a": (hp.ssm_v_heads,),
                f"{p}.ssm_beta.weight": (hp.ssm_v_heads, d),
                f"{p}.ssm_alpha.weight": (hp.ssm_v_heads, d),
                f"{p}.ssm_norm.weight": (s,),
                f"{p}.ssm_out.weight": (d, hp.ssm_v_heads * s),
            })
        else:
            out.update(_attention_tensors(hp, p))
        out.update(_ffn_tensors(hp, p))
    return out


def decode_weight_bytes(hp: HParams, weights: Mapping[str, WeightTensor]) -> int:
    """Bytes of weights one plain decode step reads: every trunk matrix and the output head once
    (an untied embedding table only one row, left out), MoE experts in the share a token routes to."""
    total = 0
    for name, w in weights.items():
        if name.startswith(MTP_PREFIX) or (name == "token_embd.weight" and "output.weight" in weights):
            continue
        share = hp.n_expert_used / hp.n_expert if "_exps." in name else 1.0
        total += round(w.data.nbytes * share)
    return total


def mtp_tensors(hp: HParams, present: Sequence[str]) -> dict[str, str]:
    """MTP graph weight name (with `mtp/` prefix) -> tensor name in the file that carries the head.

    Optional tensors (a dedicated embedding, head or head norm) are used when the file has them."""
    p = f"blk.{hp.n_layer}"
    names = [f"{p}.attn_norm.weight", f"{p}.post_attention_norm.weight", f"{p}.nextn.eh_proj.weight",
             f"{p}.nextn.enorm.weight", f"{p}.nextn.hnorm.weight"]
    names += list(_attention_tensors(hp, p)) + list(_ffn_tensors(hp, p))
    out = {MTP_PREFIX + n: n for n in names}
    out[MTP_PREFIX + "embed"] = f"{p}.nextn.embed_tokens.weight" if f"{p}.nextn.embed_tokens.weight" in present else "token_embd.weight"
    out[MTP_PREFIX + "head_norm"] = f"{p}.nextn.shared_head_norm.weight" if f"{p}.nextn.shared_head_norm.weight" in present else "output_norm.weight"
    if f"{p}.nextn.shared_head_head.weight" in present:
        out[MTP_PREFIX + "head"] = f"{p}.nextn.shared_head_head.weight"
    else:
        out[MTP_PREFIX + "head"] = "output.weight" if "output.weight" in present else "token_embd.weight"
    return out


def mtp_tensor_shapes(hp: HParams) -> dict[str, tuple[int, ...]]:
    """Expected shapes of the MTP graph's weights, by their `mtp/` names."""
    p = f"blk.{hp.n_layer}"
    d = hp.n_embd
    shapes = {f"{p}.attn_norm.weight": (d,), f"{p}.post_attention_norm.weight": (d,),
              f"{p}.nextn.eh_proj.weight": (d, 2 * d), f"{p}.nextn.enorm.weight": (d,), f"{p}.nextn.hnorm.weight": (d,)}
    shapes.update(_attention_tensors(hp, p))
    shapes.update(_ffn_tensors(hp, p))
    out = {MTP_PREFIX + n: s for n, s in shapes.items()}
    out.update({MTP_PREFIX + "embed": (hp.n_vocab, d), MTP_PREFIX + "head_norm": (d,), MTP_PREFIX + "head": (hp.n_vocab, d)})
    return out


class Qwen35Graphs:
    """Builds the step graphs of one model; caches are named states the backend owns."""

    def __init__(self, hp: HParams, weight_shapes: dict[str, tuple[int, ...]], tied: bool) -> None:
        self.hp = hp
        self.shapes = weight_shapes
        self.tied = tied

    # -- states
    def trunk_states(self, n_ctx: int, snapshots: int) -> list[StateSpec]:
        hp, s = self.hp, self.hp.ssm_state
        conv_channels = 2 * hp.ssm_groups * s + hp.ssm_v_heads * s
        specs = []
        for il in range(hp.n_layer):
            if hp.recurrent[il]:
                specs.append(StateSpec(f"conv{il}", "recurrent", (hp.ssm_conv - 1, conv_channels), snapshots))
                specs.append(StateSpec(f"ssm{il}", "recurrent", (hp.ssm_v_heads, s, s), snapshots))
            else:
                specs.append(StateSpec(f"kv{il}", "kv", (n_ctx, hp.n_head_kv, hp.head_dim)))
        return specs

    def mtp_states(self, n_ctx: int) -> list[StateSpec]:
        return [StateSpec("mtp_kv", "kv", (n_ctx, self.hp.n_head_kv, self.hp.head_dim))]

    # -- graphs
    def trunk(self, n: int, logit_rows: Sequence[int], ids: bool = False) -> Graph:
        """Trunk step over n tokens: outputs `h_nextn` [n, d] and `logits` for `logit_rows` (with `ids`,
        their argmax `ids` instead)."""
        g = Graph(f"trunk[{n}]")
        hn = self._trunk_body(g, g.input("tokens", (n,), "i32"), g.input("pos", (n,), "i32"))
        g.output("h_nextn", hn)
        if logit_rows:
            _output_logits(g, g.matmul(self._rows(g, hn, logit_rows, n), self._w(g, self._head())), ids)
        return g

    def _head(self) -> str:
        return "token_embd.weight" if self.tied else "output.weight"

    def prompt(self, n: int, mtp: bool, logits_last: bool, first: bool = False) -> Graph:
        """A chunk of n prompt tokens: the trunk, keeping only its last hidden state (`h_last` [1, d])
        and, if asked, its `logits`; with `mtp`, also the MTP head's cache entries for the pairs
        (token p + 1, trunk state p) of the chunk's positions p, from the states on the device
        (`mtp_tokens` and `mtp_pos`: the tokens and positions one ahead, the last being the next
        chunk's first token). The `first` chunk's also start with position 0's pair (token 0, zeros):
        n + 1 of them, the zeros made on the device (state 0 times `mtp_h_keep`'s 0; then ones)."""
        g = Graph(f"prompt{'+mtp' if mtp else ''}{'@0' if first else ''}[{n}]")
        hn = self._trunk_body(g, g.input("tokens", (n,), "i32"), g.input("pos", (n,), "i32"))
        h_last = self._rows(g, hn, [n - 1], n)
        g.output("h_last", h_last)
        if logits_last:
            g.output("logits", g.matmul(h_last, self._w(g, self._head())))
        if mtp:
            p, rows, h = self._mtp_prefix(), n + first, hn
            if first:
                h = g.binary("mul", g.take_rows(hn, [0, *range(n)]), g.input("mtp_h_keep", (rows, 1)))
            x = self._mtp_block_input(g, g.input("mtp_tokens", (rows,), "i32"), h, p)
            mtp_pos = g.input("mtp_pos", (rows,), "i32")
            self._mtp_kv_write(g, x, mtp_pos, mtp_pos, p)
        return g

    def _trunk_body(self, g: Graph, tokens: Ref, pos: Ref) -> Ref:
        """The trunk's layers over `tokens` at `pos`: the normed hidden states [n, d]."""
        hp = self.hp
        x = g.get_rows(self._w(g, "token_embd.weight"), tokens)
        for il in range(hp.n_layer):
            p = f"blk.{il}"
            h = g.rms_norm(x, self._w(g, f"{p}.attn_norm.weight"), hp.rms_eps)
            if hp.recurrent[il]:
                h = self._delta_net_block(g, h, p, il)
            else:
                h = self._attention_block(g, h, pos, pos, p, f"kv{il}")
            x = x + h
            h = g.rms_norm(x, self._w(g, f"{p}.post_attention_norm.weight"), hp.rms_eps)
            x = x + self._ffn(g, h, p)
        return g.rms_norm(x, self._w(g, "output_norm.weight"), hp.rms_eps)

    def mtp(self, n: int, logit_rows: Sequence[int]) -> Graph:
        """MTP step over n (token, previous trunk/MTP hidden state) pairs at consecutive positions: outputs
        `h_nextn` [n, d] and `logits` for `logit_rows`."""
        g, pos, slot, x, p = self._mtp_input(f"mtp[{n}]", n)
        hn = self._mtp_block(g, x, pos, slot, p)
        g.output("h_nextn", hn)
        if logit_rows:
            g.output("logits", g.matmul(self._rows(g, hn, logit_rows, n), self._w(g, MTP_PREFIX + "head")))
        return g

    def draft_step(self, rows: int, depth: int, ids: bool) -> Graph:
        """A drafting step in one graph, so that nothing crosses to the host between its passes: the MTP
        head over `rows` (token, trunk state) pairs at positions `pos` (the rows the step before accepted,
        then the last token's), `depth - 1` more passes each on the draft before it (its argmax) and its
        hidden state, at `draft_pos{i}` / `draft_slot{i}`, then the trunk verifying [`last` (the last
        row's token, as a float id), drafts] at `verify_pos`. Outputs `drafts` [depth] (float token ids),
        the verify's `h_nextn` [depth + 1, d] and its every row's `logits` (with `ids`, their argmax
        `ids`). Each pass is the graph `mtp` or `trunk` would run, bit for bit."""
        g, pos, slot, x, p = self._mtp_input(f"draft_step[{rows},{depth}]", rows)
        head = self._w(g, MTP_PREFIX + "head")
        h = self._rows(g, self._mtp_block(g, x, pos, slot, p), [rows - 1], rows)
        drafts = draft = g.argmax(g.matmul(h, head))
        for i in range(1, depth):
            at, at_slot = g.input(f"draft_pos{i}", (1,), "i32"), g.input(f"draft_slot{i}", (1,), "i32")
            h = self._mtp_block(g, self._mtp_block_input(g, draft, h, p), at, at_slot, p)
            draft = g.argmax(g.matmul(h, head))
            drafts = g.cat_rows(drafts, draft)
        g.output("drafts", drafts)
        n = depth + 1
        hn = self._trunk_body(g, g.cat_rows(g.input("last", (1,)), drafts), g.input("verify_pos", (n,), "i32"))
        g.output("h_nextn", hn)
        _output_logits(g, g.matmul(hn, self._w(g, self._head())), ids)
        return g

    def _mtp_block(self, g: Graph, x: Ref, pos: Ref, slot: Ref, p: str) -> Ref:
        """The MTP block over its input x (positions `pos`, cache slots `slot`): the normed hidden states."""
        hp = self.hp
        h = g.rms_norm(x, self._w(g, f"{p}.attn_norm.weight"), hp.rms_eps)
        x = x + self._attention_block(g, h, pos, slot, p, "mtp_kv")
        h = g.rms_norm(x, self._w(g, f"{p}.post_attention_norm.weight"), hp.rms_eps)
        x = x + self._ffn(g, h, p)
        return g.rms_norm(x, self._w(g, MTP_PREFIX + "head_norm"), hp.rms_eps)

    def mtp_kv(self, n: int) -> Graph:
        """The MTP head's KV cache for n (token, previous trunk hidden state) pairs, as `mtp` writes it,
        and nothing else: a prompt's positions need only their cache entries, so the rest of the
        layer (queries, attention, output, FFN: ~3/4 of it) is skipped."""
        g, pos, slot, x, p = self._mtp_input(f"mtp_kv[{n}]", n)
        g.output("k", self._mtp_kv_write(g, x, pos, slot, p))
        return g

    def _mtp_kv_write(self, g: Graph, x: Ref, pos: Ref, slot: Ref, p: str) -> Ref:
        """The MTP block's keys and values for its input x at positions `pos`, written to its cache
        at `slot`."""
        k, v = self._kv(g, g.rms_norm(x, self._w(g, f"{p}.attn_norm.weight"), self.hp.rms_eps), pos, p)
        return g.kv_write(k, v, slot, "mtp_kv")

    # -- pieces
    def _w(self, g: Graph, name: str) -> Ref:
        return g.weight(name, self.shapes[name])

    @staticmethod
    def _rows(g: Graph, x: Ref, rows: Sequence[int], n: int) -> Ref:
        return x if list(rows) == list(range(n)) else g.take_rows(x, rows)

    def _mtp_prefix(self) -> str:
        return f"{MTP_PREFIX}blk.{self.hp.n_layer}"

    def _mtp_input(self, name: str, n: int) -> tuple[Graph, Ref, Ref, Ref, str]:
        """A graph over n (token, hidden) pairs with the MTP block's input: (graph, positions, cache
        slots, that input, the block's tensor prefix). The head's cache may skip positions (the draft
        loop leaves out old rows of long plain stretches), so its slots are an input of their own:
        attention is causal over slots, rotary embeddings take the true positions."""
        g = Graph(name)
        tokens, pos, slot = g.input("tokens", (n,), "i32"), g.input("pos", (n,), "i32"), g.input("slot", (n,), "i32")
        p = self._mtp_prefix()
        return g, pos, slot, self._mtp_block_input(g, tokens, g.input("h", (n, self.hp.n_embd)), p), p

    def _mtp_block_input(self, g: Graph, tokens: Ref, h: Ref, p: str) -> Ref:
        """eh_proj([enorm(embed(token)), hnorm(h)]) for (token, hidden) pairs."""
        hp = self.hp
        e = g.rms_norm(g.get_rows(self._w(g, MTP_PREFIX + "embed"), tokens), self._w(g, f"{p}.nextn.enorm.weight"), hp.rms_eps)
        hh = g.rms_norm(h, self._w(g, f"{p}.nextn.hnorm.weight"), hp.rms_eps)
        return g.matmul(g.concat(e, hh), self._w(g, f"{p}.nextn.eh_proj.weight"))

    def _kv(self, g: Graph, h: Ref, pos: Ref, p: str) -> tuple[Ref, Ref]:
        """Keys (normed, rotated) and values of an attention layer, [n, Hkv, d] each."""
        hp = self.hp
        n, hd = h.shape[0], hp.head_dim
        k = g.reshape(g.matmul(h, self._w(g, f"{p}.attn_k.weight")), (n, hp.n_head_kv, hd))
        k = g.rms_norm(k, self._w(g, f"{p}.attn_k_norm.weight"), hp.rms_eps)
        v = g.reshape(g.matmul(h, self._w(g, f"{p}.attn_v.weight")), (n, hp.n_head_kv, hd))
        return g.rope(k, pos, hp.n_rot, hp.rope_sections, hp.rope_base), v

    def _attention_block(self, g: Graph, h: Ref, pos: Ref, slot: Ref, p: str, state: str) -> Ref:
        """Gated attention over the cache `state`: rotary embeddings at `pos`, cache rows at `slot`."""
        hp = self.hp
        n, hd = h.shape[0], hp.head_dim
        # attn_q yields, per head, the query followed by its output gate.
        qg = g.reshape(g.matmul(h, self._w(g, f"{p}.attn_q.weight")), (n, hp.n_head, 2 * hd))
        q = g.rms_norm(g.slice(qg, 0, hd), self._w(g, f"{p}.attn_q_norm.weight"), hp.rms_eps)
        gate = g.reshape(g.slice(qg, hd, 2 * hd), (n, hp.n_head * hd))
        k, v = self._kv(g, h, pos, p)
        q = g.rope(q, pos, hp.n_rot, hp.rope_sections, hp.rope_base)
        o = g.attention(q, k, v, slot, state, 1.0 / float(np.sqrt(hd)))
        o = g.reshape(o, (n, hp.n_head * hd)) * g.unary("sigmoid", gate)
        return g.matmul(o, self._w(g, f"{p}.attn_output.weight"))

    def _delta_net_block(self, g: Graph, h: Ref, p: str, il: int) -> Ref:
        hp = self.hp
        n, s, hk, hv = h.shape[0], hp.ssm_state, hp.ssm_groups, hp.ssm_v_heads
        qkv = g.matmul(h, self._w(g, f"{p}.attn_qkv.weight"))
        z = g.reshape(g.matmul(h, self._w(g, f"{p}.attn_gate.weight")), (n, hv, s))
        beta = g.unary("sigmoid", g.matmul(h, self._w(g, f"{p}.ssm_beta.weight")))
        alpha = g.matmul(h, self._w(g, f"{p}.ssm_alpha.weight")) + self._w(g, f"{p}.ssm_dt.bias")
        decay = g.unary("softplus", alpha) * self._w(g, f"{p}.ssm_a")  # ssm_a = -exp(A_log)
        c = g.unary("silu", g.ssm_conv(qkv, self._w(g, f"{p}.ssm_conv1d.weight"), f"conv{il}"))
        q = g.l2_norm(g.reshape(g.slice(c, 0, hk * s), (n, hk, s)), hp.rms_eps)
        k = g.l2_norm(g.reshape(g.slice(c, hk * s, 2 * hk * s), (n, hk, s)), hp.rms_eps)
        v = g.reshape(g.slice(c, 2 * hk * s, 2 * hk * s + hv * s), (n, hv, s))
        o = g.delta_net(q, k, v, decay, beta, f"ssm{il}")
        o = g.rms_norm(o, self._w(g, f"{p}.ssm_norm.weight"), hp.rms_eps) * g.unary("silu", z)
        return g.matmul(g.reshape(o, (n, hv * s)), self._w(g, f"{p}.ssm_out.weight"))

    def _ffn(self, g: Graph, h: Ref, p: str) -> Ref:
        if not self.hp.is_moe:
            return self._swiglu(g, h, p, "")
        out = g.moe(h, self._w(g, f"{p}.ffn_gate_inp.weight"), self._w(g, f"{p}.ffn_up_exps.weight"),
                    self._w(g, f"{p}.ffn_gate_exps.weight"), self._w(g, f"{p}.ffn_down_exps.weight"),
                    self.hp.n_expert_used)
        if self.hp.n_ff_shexp:
            shared_gate = g.unary("sigmoid", g.matmul(h, self._w(g, f"{p}.ffn_gate_inp_shexp.weight")))
            out = out + self._swiglu(g, h, p, "_shexp") * shared_gate
        return out

    def _swiglu(self, g: Graph, h: Ref, p: str, suffix: str) -> Ref:
        gate = g.unary("silu", g.matmul(h, self._w(g, f"{p}.ffn_gate{suffix}.weight")))
        up = g.matmul(h, self._w(g, f"{p}.ffn_up{suffix}.weight"))
        return g.matmul(gate * up, self._w(g, f"{p}.ffn_down{suffix}.weight"))


def _output_logits(g: Graph, logits: Ref, ids: bool) -> None:
    """The graph's `logits`, or with `ids` their rows' argmax as `ids` (token ids, not rows of the
    vocabulary, cross to the host: a backend's `device_argmax`)."""
    if ids:
        g.output("ids", g.argmax(logits))
    else:
        g.output("logits", logits)
