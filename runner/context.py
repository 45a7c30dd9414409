"""An inference context: one sequence's caches on a backend, and the trunk / MTP steps over them.

Rollback is a commit: after a verify batch, the recurrent states take the snapshot stored after the
last accepted token (selected, never recomputed); KV caches need nothing, since positions past the
sequence are overwritten by the next write and never read before.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mtprun.runner.graph import Backend, Graph
from mtprun.runner.loader import LoadedModel


class Context:
    def __init__(self, model: LoadedModel, backend: Backend, n_ctx: int, max_batch_snapshots: int = 8) -> None:
        self.model = model
        self.backend = backend
        self.n_ctx = n_ctx
        graphs = model.graphs
        self._trunk_specs = graphs.trunk_states(n_ctx, max_batch_snapshots)
        self._mtp_specs = graphs.mtp_states(n_ctx) if model.has_mtp else []
        self.recurrent_names = [s.name for s in self._trunk_specs if s.kind == "recurrent"]
        self.max_snapshots = max_batch_snapshots
        backend.load_weights(model.weights)
        backend.alloc_states(self._trunk_specs + self._mtp_specs)
        self._graphs: dict[tuple, Graph] = {}

    def reset(self) -> None:
        """A fresh context: every cache zeroed."""
        self.backend.reset_states([s.name for s in self._trunk_specs + self._mtp_specs])

    def _graph(self, key: tuple, build: Callable[[], Graph]) -> Graph:
        """The graph of `key` (kind, size, variant), built once."""
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = build()
        return g

    @property
    def greedy_ids(self) -> bool:
        """Whether greedy choices ask `trunk` and `mtp` for token ids (`ids=True`), not logits: where the
        backend takes the graph's argmax (`device_argmax`), so that a few bytes, not rows of the
        vocabulary, cross to the host."""
        return bool(getattr(self.backend, "device_argmax", False))

    def trunk(self, tokens: Sequence[int], start: int, logit_rows: Sequence[int], ids: bool = False
              ) -> tuple[np.ndarray | None, np.ndarray]:
        """Run the trunk on tokens at positions start.. ; returns (logits of logit_rows, h_nextn [n, d]);
        with `ids` (see `greedy_ids`), each of those rows' argmax (float token ids) in place of its
        logits. Recurrent states are left uncommitted: call `commit` with how many tokens to keep."""
        n = len(tokens)
        out = self.backend.run(
            self._graph(("trunk", n, tuple(logit_rows), ids), lambda: self.model.graphs.trunk(n, logit_rows, ids)),
            {"tokens": np.asarray(tokens, np.int32), "pos": np.arange(start, start + n, dtype=np.int32)},
        )
        return out.get("ids" if ids else "logits"), out["h_nextn"]

    def device_seconds(self) -> float | None:
        """The backend's GPU busy time so far, where it measures one (native/gpu.py), else None."""
        return getattr(self.backend, "device_seconds", None)

    def commit(self, n_keep: int) -> None:
        self.backend.commit(self.recurrent_names, n_keep)

    def mtp(self, tokens: Sequence[int], h: np.ndarray, start: int, logit_rows: Sequence[int],
            slot: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Run the MTP head alone on (token, previous hidden) pairs at positions start.., their cache
        entries at slots `slot`.. (default: the positions; fewer where earlier positions were skipped);
        returns (logits of logit_rows, h_nextn [n, d]). Decoding drafts with `draft_step`."""
        n = len(tokens)
        out = self.backend.run(self._graph(("mtp", n, tuple(logit_rows)), lambda: self.model.graphs.mtp(n, logit_rows)),
                               self._mtp_inputs(tokens, h, start, slot))
        return out.get("logits"), out["h_nextn"]

    def draft_step(self, tokens: Sequence[int], h: np.ndarray, start: int, slot: int, depth: int, ids: bool
                   ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """A drafting step as one graph run (see the model's `draft_step`): the MTP head over the
        (token, previous hidden) pairs at positions start.. (cache slots slot..), the last pair being the
        last token's at position p, chained to `depth` greedy drafts at p + 1.. (slots shifted alike), and
        the trunk over [last token, drafts] at p..; returns (the drafts, the verify's logits of every row
        or with `ids` their argmax ids, its h_nextn [depth + 1, d]). Recurrent states are left
        uncommitted, as by `trunk`."""
        rows = len(tokens)
        p = start + rows - 1
        inputs = self._mtp_inputs(tokens, h, start, slot)
        for i in range(1, depth):
            inputs[f"draft_pos{i}"] = np.array([p + i], np.int32)
            inputs[f"draft_slot{i}"] = np.array([slot + rows - 1 + i], np.int32)
        inputs["last"] = np.array([tokens[-1]], np.float32)
        inputs["verify_pos"] = np.arange(p, p + depth + 1, dtype=np.int32)
        graph = self._graph(("draft_step", rows, depth, ids), lambda: self.model.graphs.draft_step(rows, depth, ids))
        out = self.backend.run(graph, inputs)
        return [int(t) for t in out["drafts"]], out["ids" if ids else "logits"], out["h_nextn"]

    @staticmethod
    def _mtp_inputs(tokens: Sequence[int], h: np.ndarray, start: int, slot: int | None) -> dict[str, np.ndarray]:
        n = len(tokens)
        pos = np.arange(start, start + n, dtype=np.int32)
        return {"tokens": np.asarray(tokens, np.int32), "pos": pos, "h": np.asarray(h, np.float32).reshape(n, -1),
                "slot": pos if slot is None else np.arange(slot, slot + n, dtype=np.int32)}

    def mtp_kv(self, tokens: Sequence[int], h: np.ndarray, start: int, slot: int | None = None) -> None:
        """Fill the MTP head's KV cache for (token, previous hidden) pairs at positions start.. (as
        `mtp` would, bit for bit), computing nothing else: the prompt pass."""
        n = len(tokens)
        self.backend.run(self._graph(("mtp_kv", n), lambda: self.model.graphs.mtp_kv(n)), self._mtp_inputs(tokens, h, start, slot))

    def prompt_pass(self, tokens: Sequence[int], n_batch: int, next_token: int | None,
                    logits_last: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
        """A fresh sequence's prompt at positions 0.. in batches of n_batch, committing each; returns the
        last token's logits (if asked) and trunk state [d]. With `next_token` (the token after the prompt), also the MTP
        head's cache for positions 0 .. len(tokens): the pairs (token p, trunk state p - 1) (zeros
        before the first), written on the device inside each batch's trunk graph, as `mtp_kv` would
        (position 0's by the first batch's: no run of its own)."""
        mtp = next_token is not None
        ahead = list(tokens[1:]) + ([next_token] if mtp else [])
        out: dict[str, np.ndarray] = {}
        for b in range(0, len(tokens), n_batch):
            chunk = tokens[b : b + n_batch]
            n, pos = len(chunk), np.arange(b, b + len(chunk), dtype=np.int32)
            inputs = {"tokens": np.asarray(chunk, np.int32), "pos": pos}
            first = mtp and b == 0
            if mtp:
                inputs.update(mtp_tokens=np.asarray(([tokens[0]] if first else []) + ahead[b : b + n], np.int32),
                              mtp_pos=np.arange(b + 1 - first, b + n + 1, dtype=np.int32))
            if first:
                inputs["mtp_h_keep"] = (np.arange(n + 1) > 0).astype(np.float32)[:, None]
            last = logits_last and b + n_batch >= len(tokens)
            graph = self._graph(("prompt", n, mtp, last, first), lambda: self.model.graphs.prompt(n, mtp, last, first))
            out = self.backend.run(graph, inputs)
            self.commit(n)
        return (out["logits"][0] if logits_last else None), out["h_last"][0]

    def prefill(self, tokens: Sequence[int], start: int, n_batch: int, logits_last: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """Trunk over a long prompt in batches of n_batch, committing each; returns the last batch's
        logits (last row, if asked) and the h_nextn of every token."""
        hs, logits = [], None
        for b in range(0, len(tokens), n_batch):
            chunk = tokens[b : b + n_batch]
            last = logits_last and b + n_batch >= len(tokens)
            logits, h = self.trunk(chunk, start + b, [len(chunk) - 1] if last else [])
            self.commit(len(chunk))
            hs.append(h)
        return logits, np.concatenate(hs, axis=0)

