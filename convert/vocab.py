"""Tokenizer metadata for a byte-level BPE checkpoint, as llama.cpp's converter writes it.

Tokens and their types come from tokenizer.json; the pre-tokenizer name is recognised from the
tokenizer's own Split regexes (models.toml lists them); merges, special token ids, add-bos/eos
flags and the chat template are read by gguf-py's SpecialVocab, which is what llama.cpp uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf

from mtprun.convert.families import pretokenizers
from mtprun.runner.errors import MtprunError


def _looks_special(token: str) -> bool:
    # llama.cpp marks <|...|> added tokens as control tokens even when not flagged special.
    return token.startswith("<|") and token.endswith("|>")


def _split_regexes(pre: dict[str, Any] | None) -> list[str]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [r for p in pre.get("pretokenizers", []) for r in _split_regexes(p)]
    if pre.get("type") == "Split" and "Regex" in (pre.get("pattern") or {}):
        return [pre["pattern"]["Regex"]]
    return []


def pretokenizer_name(tokenizer: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (tokenizer.ggml.pre)."""
    regexes = _split_regexes(tokenizer.get("pre_tokenizer"))
    for name, known in pretokenizers().items():
        if regexes == known:
            return name
    raise MtprunError(f"The tokenizer's pre-tokenizer is not one mtprun knows "
                      f"(known: {', '.join(pretokenizers())}).")


def load_tokenizer(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer.json"
    try:
        tokenizer = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MtprunError(f"Cannot read {path} ({e}).") from e
    if (tokenizer.get("model") or {}).get("type") != "BPE":
        raise MtprunError(f"{path} is not a BPE tokenizer; only byte-level BPE vocabularies are supported.")
    return tokenizer


def tokens_and_types(tokenizer: dict[str, Any], vocab_size: int | None) -> tuple[list[str], list[int]]:
    """Every token id up to the model's vocab size, with llama.cpp's token types."""
    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer.get("added_tokens", [])}
    vocab.update({content: t["id"] for content, t in added.items()})
    by_id = {i: tok for tok, i in vocab.items()}
    n = vocab_size if vocab_size is not None else len(vocab)
    if max(by_id) >= n:
        raise MtprunError(f"The tokenizer has token id {max(by_id)} but the model's vocabulary size is {n}.")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        token = by_id.get(i)
        if token is None:  # a hole in the vocabulary (padding rows of the embedding)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            if added[token].get("special") or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")  # user-defined tokens are stored pre-normalised
                types.append(gguf.TokenType.USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def add_vocab(writer: gguf.GGUFWriter, directory: Path, vocab_size: int | None) -> None:
    """The tokenizer.* keys, in llama.cpp's order."""
    tokenizer = load_tokenizer(directory)
    pre = pretokenizer_name(tokenizer)
    tokens, types = tokens_and_types(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(directory, load_merges=True, n_vocab=len(tokens))
    _byte_level_defaults(special, tokenizer)
    special.add_to_gguf(writer, quiet=True)


def _byte_level_defaults(special: gguf.SpecialVocab, tokenizer: dict[str, Any]) -> None:
    """A ByteLevel post-processor adds no BOS/EOS, and the post-processor outranks
    tokenizer_config.json: llama.cpp's gguf-py does this, the released gguf package not yet."""
    post = tokenizer.get("post_processor") or {}
    if not any(p.get("type") == "ByteLevel" for p in post.get("processors", [post])):
        return
    rest = {k: v for k, v in special.add_special_token.items() if k not in ("bos", "eos")}
    special.add_special_token = {"bos": False, "eos": False, **rest}
