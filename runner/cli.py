"""The `mtprun` command line: run, chat, info (and the converter's convert / quantize).

Flag names follow llama.cpp's where they exist. Every user error is one sentence on stderr and a
non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from mtprun.native import BACKENDS, ACTIVATIONS
from mtprun.runner.errors import MtprunError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"mtprun: error: {message}.\n")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help="GGUF model file (default: the embedded demo model)")
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context size in tokens (default: min(4096, trained))")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="where the model runs (auto: the fastest that starts here; numpy: the reference)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    add_activations_arg(p)
    p.add_argument("--mtp-model", default=None, help="MTP-only sidecar GGUF for a model without an MTP head")


def add_activations_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--activations", choices=ACTIVATIONS, default="f32",
                   help="CPU and CUDA matrix products: f32 activations (exact, the default), q8 (int8 per "
                        "block as llama.cpp: faster, about llama.cpp's distance from exact) or q8x2 (a "
                        "second int8 plane for q8's rounding error: near exact)")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--n-predict", type=int, default=256, help="tokens to generate")
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 is greedy")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spec-type", choices=("draft-mtp", "none"), default="draft-mtp",
                   help="none: plain decoding, with the model loaded without its MTP head (less memory)")
    p.add_argument("--spec-draft-n-max", type=_draft_depth_arg, default="auto",
                   help="tokens drafted per step by the MTP head, or 'auto' (default): the depth that "
                        "maximises measured tokens/s, re-chosen before each step")


def _draft_depth_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtprun", description="Run Qwen3.5 GGUF models with exact Multi-Token Prediction drafting.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="generate a completion for a prompt")
    _model_args(run)
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="prompt text (special tokens such as <|im_start|> are recognised)")
    src.add_argument("-f", "--file", help="read the prompt from a file")
    _generation_args(run)
    run.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")

    from mtprun.tui.cli import add_chat_arguments, add_sessions_parser  # light: imports no Textual

    chat = sub.add_parser("chat", help="chat with the model (full screen; --no-tui for a line REPL)")
    _model_args(chat)
    _generation_args(chat)
    add_chat_arguments(chat)
    add_sessions_parser(sub)

    info = sub.add_parser("info", help="describe a GGUF model, or (--backends) the backends here")
    info.add_argument("model", nargs="?")
    info.add_argument("--backends", action="store_true", help="list each backend, its device, and whether it works here")
    info.add_argument("-c", "--ctx-size", type=int, default=4096)

    from mtprun.convert.cli import add_subcommands as add_convert_commands
    from mtprun.runner.bench import add_bench_parser, run_bench

    add_bench_parser(sub)
    sub.choices["bench"].set_defaults(handler=run_bench)
    add_convert_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "chat":
            return _cmd_chat(args)
        if args.command == "info":
            return _cmd_info(args)
        if args.command == "sessions":
            from mtprun.tui.cli import run_sessions

            return run_sessions(args)
        return args.handler(args)
    except MtprunError as exc:
        print(f"mtprun: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _load(args: argparse.Namespace):
    from mtprun.runner.api import load

    if args.model is None:
        from mtprun.runner.demo import demo_model_path

        args.model = str(demo_model_path())
        print("mtprun: no model given; using the embedded demo model (tinycoder, 7M parameters, q4_k_m).", file=sys.stderr)
    if args.threads is not None and args.threads < 1:
        raise MtprunError(f"--threads must be at least 1, got {args.threads}.")
    model = load(args.model, backend=args.backend, n_ctx=args.ctx_size, mtp_model=args.mtp_model, threads=args.threads,
                 activations=args.activations, mtp=args.spec_type != "none")
    return model


def _draft_depth(args: argparse.Namespace, model) -> int | str:
    if args.spec_type == "none":
        return 0
    if not model.has_mtp:
        print(f"mtprun: {Path(args.model).name} has no MTP head; drafting is off.", file=sys.stderr)
        return 0
    return args.spec_draft_n_max


def _sampling(args: argparse.Namespace) -> dict:
    return {"temp": args.temp, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p, "seed": args.seed}


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    try:
        return Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MtprunError(f"cannot read prompt file {args.file} ({getattr(exc, 'strerror', None) or exc}).") from None


def _cmd_run(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    model = _load(args)
    depth = _draft_depth(args, model)
    ids = model.tokenize(prompt)
    gen = model.stream(ids, n_predict=args.n_predict, spec_draft_n_max=depth, **_sampling(args))
    if args.json:
        gen.run()
        print(json.dumps({"prompt_tokens": len(ids), "tokens": gen.tokens, "text": gen.text, "stats": gen.stats.as_dict()}))
        return 0
    _stream_text(model, gen)
    print(file=sys.stdout)
    _print_stats(gen.stats)
    return 0


def _stream_text(model, gen) -> None:
    decoder = model.tokenizer.stream()
    eog = model.tokenizer.eog_ids
    for tok in gen:
        if tok in eog:
            break
        sys.stdout.write(decoder.feed(tok))
        sys.stdout.flush()
    sys.stdout.write(decoder.flush())
    sys.stdout.flush()


def _print_stats(stats) -> None:
    s = stats.as_dict()
    line = (f"prefill {s['prefill_tokens_per_s']:.1f} tok/s, decode {s['decode_tokens_per_s']:.1f} tok/s, "
            f"{stats.generated} tokens in {s['steps']} steps")
    if s["drafted"]:
        per_pos = ", ".join(f"{r:.0%}" for r in s["accepted_per_position"])
        line += (f"; drafted {s['drafted']}, accepted {s['accepted']} ({s['acceptance_rate']:.0%}), "
                 f"mean accepted length {s['mean_accepted_length']:.2f}, per position [{per_pos}]")
    print(line, file=sys.stderr)


def _cmd_chat(args: argparse.Namespace) -> int:
    from mtprun.tui.cli import run_chat

    depth = 0 if args.spec_type == "none" else args.spec_draft_n_max
    return run_chat(args, lambda: _load(args), depth, _sampling(args))


def _cmd_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from mtprun.runner.loader import load_model

    if args.backends:
        from mtprun.native import describe_backends

        for name, works, detail in describe_backends():
            print(f"{name:8} {'works' if works else 'no   '}  {detail}")
        if args.model is None:
            return 0
    if args.model is None:
        raise MtprunError("info needs a model file (or --backends).")

    loaded = load_model(args.model)
    hp, f = loaded.hp, loaded.file
    types = Counter(f.tensor_type_name(n) for n in f.tensors)
    n_params = sum(int(np.prod(t.shape)) for t in f.tensors.values())
    weights = f.size_bytes()
    n_attn = sum(1 for i in range(hp.n_layer) if not hp.recurrent[i]) + (1 if loaded.has_mtp else 0)
    kv_bytes = 2 * n_attn * args.ctx_size * hp.n_head_kv * hp.head_dim * 4
    rec_bytes = sum(1 for i in range(hp.n_layer) if hp.recurrent[i]) * 4 * (
        hp.ssm_v_heads * hp.ssm_state * hp.ssm_state + (hp.ssm_conv - 1) * (2 * hp.ssm_groups + hp.ssm_v_heads) * hp.ssm_state)
    print(f"file:          {f.path}")
    print(f"architecture:  {hp.arch} ({hp.n_layer} layers: {sum(hp.recurrent[:hp.n_layer])} Gated DeltaNet, "
          f"{hp.n_layer - sum(hp.recurrent[:hp.n_layer])} full attention)")
    print(f"size:          {n_params / 1e6:.1f} M parameters, {weights / 2**20:.1f} MiB of weights")
    print(f"embedding:     {hp.n_embd}, vocabulary {hp.n_vocab}, heads {hp.n_head} (KV {hp.n_head_kv}) x {hp.head_dim}")
    if hp.is_moe:
        print(f"experts:       {hp.n_expert} (top {hp.n_expert_used}), expert FFN {hp.n_ff_exp}, shared {hp.n_ff_shexp}")
    print(f"tensor types:  {', '.join(f'{k} x{v}' for k, v in sorted(types.items()))}")
    print(f"MTP head:      {'yes (' + str(hp.n_nextn) + ' block)' if loaded.has_mtp else 'no'}")
    print(f"memory needed: {(weights + kv_bytes + rec_bytes) / 2**20:.1f} MiB at context {args.ctx_size} "
          f"(weights {weights / 2**20:.1f}, KV cache {kv_bytes / 2**20:.1f}, recurrent state {rec_bytes / 2**20:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
