"""`mtprun convert` and `mtprun quantize` subcommands (registered by the runner's CLI)."""

from __future__ import annotations

import argparse
import sys

from mtprun.convert.presets import OUTTYPES, QUANTIZE_PRESETS


def _convert(args: argparse.Namespace) -> int:
    from mtprun.convert.converter import convert_checkpoint

    mode = "only" if args.mtp_only else "none" if args.no_mtp else "whole"
    path = convert_checkpoint(args.checkpoint_dir, args.output, outtype=args.outtype, mtp=mode,
                              force=args.force, progress=sys.stderr.isatty())
    print(path)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from mtprun.convert.requantize import quantize_gguf

    path = quantize_gguf(args.input, args.output, args.type, force=args.force, progress=sys.stderr.isatty())
    print(path)
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register `convert` and `quantize`; each sets `handler`, which returns an exit code."""
    p = subparsers.add_parser("convert", help="convert a Hugging Face checkpoint to GGUF, keeping the MTP head")
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    p.add_argument("-o", "--output", metavar="OUT.gguf", help="output file (default: named like llama.cpp's, "
                   "in the checkpoint directory)")
    p.add_argument("--outtype", choices=OUTTYPES, default="f32", help="tensor type (default: f32)")
    mtp = p.add_mutually_exclusive_group()
    mtp.add_argument("--mtp-only", action="store_true", help="write only the MTP head, as a draft sidecar file")
    mtp.add_argument("--no-mtp", action="store_true", help="leave the MTP head out")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(handler=_convert)

    q = subparsers.add_parser("quantize", help="quantize an f32/f16/bf16 GGUF file as llama-quantize does")
    q.add_argument("input", metavar="IN.gguf")
    q.add_argument("output", metavar="OUT.gguf")
    q.add_argument("type", metavar="TYPE", type=str.lower, choices=list(QUANTIZE_PRESETS))
    q.add_argument("--force", action="store_true", help="overwrite an existing output file")
    q.set_defaults(handler=_quantize)
