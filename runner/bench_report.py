"""Text tables for `mtprun bench` results (the plain data `bench.run` returns)."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Sequence

from mtprun.native import ACTIVATION_BACKENDS


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns right-aligned, except the first."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _pct(x: float | None) -> str:
    """A share as a whole percentage; one that rounds to 0 but is not ("0%" read as nothing) as "<1%"."""
    if x is None:
        return "-"
    text = f"{x:.0%}"
    return "<1%" if x > 0 and text == "0%" else text


def format_report(r: dict) -> str:
    llama = r["llama_cpp"]
    kinds = Counter(p["kind"] for p in r["prompts"])
    threads = r["threads"]
    ours_threads = "" if threads["ours"] == threads["requested"] else f" (ours: {threads['ours']})"
    out = [
        f"mtprun bench: {Path(r['model']).name}" + (f" + {Path(r['mtp_model']).name}" if r["mtp_model"] else "")
        + f", backend {r['backend']}" + (f" ({r['activations']} activations)" if r["backend"] in ACTIVATION_BACKENDS else "")
        + f", threads {threads['requested']}{ours_threads}",
        f"{len(r['prompts'])} prompts ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), greedy, "
        f"{r['n_gen']} tokens each; prefill test {r['n_prompt']} tokens, best of {r['repetitions']}",
        "",
        _prefill_table(r["prefill"], llama),
        "",
        _depth_table(r["depths"], llama is not None),
    ]
    if llama and llama["mtp"]:
        out += ["", _llama_mtp_table(llama, r["depths"])]
    if len(r["depths"]) > 1 and len(kinds) > 1:
        out += ["", _kind_table(r["depths"], kinds)]
    if any(d["depth"] == "auto" for d in r["depths"]) and len(r["depths"]) > 2:
        out += ["", _auto_prompt_table(r["depths"], r["prompts"]),
                "paired: the median over repetitions of auto's run over the other depth's run in the same repetition."]
    if not r["has_mtp"]:
        out += ["", "the model has no MTP head: only depth 0 was measured (pair one with --mtp-model)."]
    out += [f"WARNING: depth {row['depth']} did not produce the tokens of depth 0." for row in r["depths"]
            if not row["same_tokens_as_depth_0"]]
    if any(d.get("device_share") is not None for d in r["depths"]):
        shares = ", ".join(f"{d['depth']}: {_pct(d['device_share'])}" for d in r["depths"])
        out += ["", f"GPU busy share of decode wall time (timestamp queries), by depth: {shares}"]
    auto = next((d for d in r["depths"] if d["depth"] == "auto"), None)
    if auto:
        chosen = ", ".join(f"{k}: {v}" for k, v in auto["depth_histogram"].items())
        out += ["", f"auto: steps per chosen depth {{{chosen}}}; its 'ideal' column is its own predicted speedup."]
        plain = r["depths"][0]["every_run_tokens_per_s"]
        if plain:
            out.append(f"auto over every run, the first ones (still learning) included: {_num(auto['every_run_tokens_per_s'])} "
                       f"tok/s, {_times(auto['every_run_tokens_per_s'] / plain)} plain decoding's {_num(plain)}.")
    out += ["", _bandwidth_line(r["bandwidth"])]
    memory = r.get("device_memory")
    if memory:
        on, off = memory["mtp_on_bytes"], memory["mtp_off_bytes"]
        out.append(f"device memory held by our buffers: {on / 2**20:.1f} MiB with MTP on, {off / 2**20:.1f} MiB with the "
                   f"model loaded without its MTP head ({_times(on / off if off else None)}).")
    rss = f"peak RSS {_num(r['peak_rss_mib'])} MiB"
    if llama:
        rss += f" (llama.cpp's process: {_num(llama['peak_rss_mib'])} MiB)"
    out += ["", rss, "speedup: decode tok/s over depth 0's; verify/decode: trunk forward of n+1 tokens over 1 (goal <= 1.3)"
            + ("; its verify/decode: llama.cpp's llama_decode of n+1 tokens (every row's logits) over 1." if llama else "."),
            "draft%: choosing the depth and the MTP cache's catch-up; verify%: each step's graph (drafts and verify in one).",
            *textwrap.wrap(r["ideal_formula"] + ".", 100)]
    if llama:
        where = "every layer on the GPU" if llama["gpu_offload"] else "on the CPU"
        out += textwrap.wrap(f"llama.cpp: llama-cpp-python {llama['version']}, same file, token ids and threads, {where}; "
                             f"{llama['mode']}; 'vs llama.cpp' is ours / its plain decode (no MTP)"
                             + ("; its draft-mtp decode ran in llama-speculative-simple, one process per prompt and depth, "
                                "timed by itself, greedy, on the prompts' text." if llama["mtp"] else "."), 100)
    return "\n".join(out)


def _bandwidth_line(b: dict) -> str:
    line = (f"plain decode reads {b['weight_bytes_per_token'] / 1e6:.1f} MB of weights a token: "
            f"{b['decode_bytes_per_s'] / 1e9:.1f} GB/s")
    if b["share"] is None:
        return line + " (no bandwidth test: this backend has none, or its buffer did not fit)."
    line += (f", {_pct(b['share'])} of the {b['ceiling_bytes_per_s'] / 1e9:.1f} GB/s measured here "
             f"({b['ceiling_measured']})")
    return line + ("; above 100%: the weights fit in the caches." if b["share"] > 1 else ".")


def _prefill_table(p: dict, llama: dict | None) -> str:
    slowdown = f"{-p['mtp_on_slowdown']:+.1%}" if p["mtp_on_slowdown"] is not None else "-"
    header = [f"prefill ({p['tokens']} tokens)", "tok/s", "MTP on vs off"]
    rows = [["MTP off", _num(p["mtp_off_tokens_per_s"]), ""], ["MTP on", _num(p["mtp_on_tokens_per_s"]), slowdown]]
    if llama:
        header.append("vs llama.cpp")
        rows[0].append(_num(p["vs_llama_cpp"]["mtp_off"], ".2f"))
        rows[1].append(_num(p["vs_llama_cpp"]["mtp_on"], ".2f"))
        rows.append(["llama.cpp (MTP off)", _num(llama["prefill_tokens_per_s"]), "", ""])
    return table(header, rows)


def _depth_table(depths: list[dict], with_llama: bool) -> str:
    header = ["depth", "decode tok/s", "speedup", "ideal", "accept", "mean len", "per position",
              "verify/decode", "prefill%", "draft%", "verify%", "rollback%"] + (["vs llama.cpp", "its verify/decode"] if with_llama else [])
    rows = []
    for d in depths:
        secs = d["seconds"]
        total = sum(secs.values()) or 1.0
        rows.append([
            str(d["depth"]), _num(d["decode_tokens_per_s"]), _times(d["speedup"]),
            _times(d["ideal_speedup"] if d["depth"] != "auto" else d["predicted_speedup"]), _pct(d["acceptance_rate"]), _num(d["mean_accepted_length"], ".2f"),
            " ".join(_pct(a) for a in d["accepted_per_position"]) or "-", _num(d["verify_decode_ratio"], ".2f"),
            *(_pct(secs[k] / total) for k in ("prefill", "draft", "verify", "rollback")),
        ] + ([_num(d.get("vs_llama_cpp"), ".2f"), _num(d.get("llama_cpp_verify_decode_ratio"), ".2f")] if with_llama else []))
    return table(header, rows)


def _llama_mtp_table(llama: dict, ours: list[dict]) -> str:
    """llama.cpp's draft-mtp decode per depth, beside its plain decode and ours at the same depth."""
    header = ["llama.cpp draft-mtp", "decode tok/s", "vs its plain", "accept", "ours / it"]
    by_depth = {d["depth"]: d for d in ours}
    rows = [[f"depth {m['depth']}", _num(m["decode_tokens_per_s"]), _times(m["speedup_over_plain"]),
             _pct(m["acceptance_rate"]), _num(by_depth[m["depth"]].get("vs_llama_cpp_mtp"), ".2f")] for m in llama["mtp"]]
    rows.append(["plain (llama-cpp-python)", _num(llama["decode_tokens_per_s"]), "1.00x", "-", _num(by_depth[0].get("vs_llama_cpp"), ".2f")])
    return table(header, rows)


def _auto_prompt_table(depths: list[dict], prompts: list[dict]) -> str:
    """Per prompt: auto's decode beside plain decoding and the best fixed depth for that prompt."""
    fixed = [d for d in depths if d["depth"] not in (0, "auto")]
    plain = next(d for d in depths if d["depth"] == 0)["by_prompt"]
    auto_row = next(d for d in depths if d["depth"] == "auto")
    auto = auto_row["by_prompt"]
    header = ["auto by prompt", "plain tok/s", "best fixed", "tok/s", "auto tok/s", "vs plain", "vs best",
              "paired: vs plain", "vs best", "(depth)"]
    rows = []
    for i, (p, paired) in enumerate(zip(prompts, auto_row["paired_by_prompt"])):
        best = max(fixed, key=lambda d: d["by_prompt"][i])
        rows.append([p["name"], _num(plain[i]), f"depth {best['depth']}", _num(best["by_prompt"][i]), _num(auto[i]),
                     _times(auto[i] / plain[i]), _times(auto[i] / best["by_prompt"][i]),
                     _times(paired["vs_plain"]), _times(paired["vs_best"]), str(paired["best_depth"])])
    return table(header, rows)


def _kind_table(depths: list[dict], kinds: Counter) -> str:
    """Acceptance rate and mean accepted length per prompt kind, for each drafting depth."""
    drafting = [d for d in depths if d["depth"] != 0]
    header = ["acceptance by kind"] + [f"depth {d['depth']}" for d in drafting]
    rows = [[f"{kind} ({n} prompts)"] + [f"{_pct(d['by_kind'][kind]['acceptance_rate'])} "
                                           f"{_num(d['by_kind'][kind]['mean_accepted_length'], '.2f')}" for d in drafting]
            for kind, n in sorted(kinds.items())]
    return table(header, rows)
