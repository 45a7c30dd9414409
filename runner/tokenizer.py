"""Byte-level BPE tokenizer built from GGUF metadata, matching llama.cpp's token ids exactly.

The merge loop runs in Hugging Face `tokenizers` (a `BPE` model fed the GGUF vocabulary and merges,
behind a regex `Split` + `ByteLevel` pre-tokenizer); the special-token partitioning, token pieces and
end-of-generation set are done here so that they follow llama.cpp's rules rather than HF's.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from typing import Any

import gguf
from tokenizers import Regex
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import models, pre_tokenizers

from mtprun.runner.errors import MtprunError

# GGUF token types (gguf.TokenType): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Code points that the Unicode 16 tables of `tokenizers`' regex engine (Oniguruma) class as letters,
# marks or digits but that llama.cpp's Unicode 15.1 tables leave unassigned (and so treat like
# punctuation). Excluding them from \p{L}/\p{M}/\p{N} makes the regex split them as llama.cpp does;
# with an engine on older tables the exclusion changes nothing.
_NEWER_UNICODE = (
    r"\x{0897}\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}"
    r"\x{10D40}-\x{10D65}\x{10D69}-\x{10D6D}\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{10EFC}"
    r"\x{11380}-\x{11389}\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}-\x{113C0}\x{113C2}"
    r"\x{113C5}\x{113C7}-\x{113CA}\x{113CC}-\x{113D3}\x{113E1}-\x{113E2}\x{116D0}-\x{116E3}"
    r"\x{11BC0}-\x{11BE0}\x{11BF0}-\x{11BF9}\x{11F5A}\x{13460}-\x{143FA}\x{16100}-\x{16139}"
    r"\x{16D40}-\x{16D6C}\x{16D70}-\x{16D79}\x{18CFF}\x{1CCF0}-\x{1CCF9}\x{1E5D0}-\x{1E5FA}"
)


def _pre_regex(marks: bool) -> str:
    """Qwen's split regex (qwen35 lets letter runs include combining marks, qwen2 does not)."""
    x = _NEWER_UNICODE
    letters = rf"[[\p{{L}}\p{{M}}]&&[^{x}]]" if marks else rf"[\p{{L}}&&[^{x}]]"
    other = rf"[[^\s\p{{L}}\p{{M}}\p{{N}}]{x}]" if marks else rf"[[^\s\p{{L}}\p{{N}}]{x}]"
    return (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
        rf"|[[^\r\n\p{{L}}\p{{N}}]{x}]?{letters}+"
        rf"|[\p{{N}}&&[^{x}]]"
        rf"| ?{other}+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )


_PRE_TOKENIZERS = {"qwen35": _pre_regex(marks=True), "qwen2": _pre_regex(marks=False)}

# Token texts llama.cpp treats as end-of-turn / end-of-generation / fill-in-the-middle markers when the
# GGUF does not name them; each recognised token is also forced to behave as a control token.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))
# (GGUF key suffix, candidate texts, whether the token ends generation)
_FIM = (
    ("fim_pre", ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                 "<|code_prefix|>", "<|prefix|>"), False),
    ("fim_suf", ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                 "<|code_suffix|>", "<|suffix|>"), False),
    ("fim_mid", ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                 "<|code_middle|>", "<|middle|>"), False),
    ("fim_pad", ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"), True),
    ("fim_rep", ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"), True),
    ("fim_sep", ("<|file_sep|>",), True),
)


def _byte_alphabet() -> dict[str, int]:
    """GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest are shifted to 256+."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in keep}
    n = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + n)] = b
            n += 1
    return table


_CHAR_TO_BYTE = _byte_alphabet()
# str.translate table: alphabet char -> the byte it stands for (as a latin-1 char); any other char
# below 256 is sent above 255 so that the latin-1 encode fails and the slow path handles it.
_DECODE_TABLE = {ord(c): chr(b) for c, b in _CHAR_TO_BYTE.items()}
_DECODE_TABLE.update({c: "\U0010ffff" for c in range(256) if chr(c) not in _CHAR_TO_BYTE})


def _decode_normal(text: str) -> bytes:
    """Bytes of a normal token; characters outside the byte alphabet render as llama.cpp does."""
    try:
        return text.translate(_DECODE_TABLE).encode("latin-1")
    except UnicodeEncodeError:
        out = bytearray()
        for ch in text:
            if ch in _CHAR_TO_BYTE:
                out.append(_CHAR_TO_BYTE[ch])
            else:
                out += b"[UNK_BYTE_0x" + ch.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
        return bytes(out)


def _check_pre(pre: str, path: str) -> None:
    if pre not in _PRE_TOKENIZERS:
        raise MtprunError(f"{path} uses the pre-tokenizer '{pre}', which is not supported "
                          f"(supported: {', '.join(sorted(_PRE_TOKENIZERS))}).")


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


class StreamDecoder:
    """Turns token ids, fed one at a time, into text that never ends in half a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, special: bool = True) -> None:
        self._tok = tokenizer
        self._special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Text completed by this token ('' while a multi-byte character is still incomplete)."""
        return self._utf8.decode(self._tok.token_to_piece(token_id, self._special))

    def flush(self) -> str:
        """Whatever is held back, with an incomplete trailing character shown as U+FFFD."""
        return self._utf8.decode(b"", final=True)


class Tokenizer:
    """llama.cpp-compatible tokenizer for GGUF byte-level BPE vocabularies (Qwen pre-tokenizers)."""

    def __init__(self, tokens: list[str], merges: list[str], token_types: list[int] | None, pre: str,
                 ids: dict[str, int | None], path: str = "<memory>") -> None:
        _check_pre(pre, path)
        n = len(tokens)
        if "" in tokens:  # llama.cpp renames empty entries so that they can never match text
            tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self._tokens = tokens
        self._types = list(token_types) if token_types is not None else [_NORMAL] * n
        if len(self._types) < n:
            raise MtprunError(f"{path} has fewer token types than tokens in its vocabulary.")

        def valid(i: int | None) -> int | None:
            return i if i is not None and 0 <= i < n else None

        to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            to_id.setdefault(t, i)
        if any(c not in to_id for c in _CHAR_TO_BYTE):
            # llama.cpp silently drops bytes it has no token for; refuse rather than diverge from it.
            raise MtprunError(f"{path} has a BPE vocabulary without all 256 byte tokens, which is not supported.")
        self._bos = valid(ids.get("bos"))
        self._eos = valid(ids.get("eos"))
        self._pad = valid(ids.get("padding"))
        self._control = {i for i in range(n) if self._types[i] == _CONTROL}

        def detect(key: str, texts: tuple[str, ...]) -> int | None:
            # A GGUF key wins; otherwise the first listed text present is taken and made a control token.
            got = valid(ids.get(key))
            if got is None:
                for t in texts:
                    if t in to_id:
                        got = to_id[t]
                        self._control.add(got)
                        break
            return got

        # llama.cpp scans an unordered map here, so which of several present texts wins is unspecified;
        # the list order decides (for Qwen: <|im_end|> before <|endoftext|>). All of them end generation.
        self._eot = detect("eot", _EOT_TEXTS)
        eom = detect("eom", ("<|eom_id|>",))
        eog: set[int] = set()
        for key, texts, ends in _FIM:
            fid = detect(key, texts)
            if ends and fid is not None:
                eog.add(fid)
        for t, i in to_id.items():
            if t in _EOG_TEXTS:
                eog.add(i)
                self._control.add(i)
        eog.update(i for i in (self._eos, self._eot, eom) if i is not None)
        # Two vocabularies where a listed text is an ordinary token: gpt-oss/solar-open's <|end|>
        # (demoted to user-defined) and gemma4/plamo's </s> (demoted to normal).
        texts = {tokens[i] for i in eog}
        if "<|end|>" in texts and ({"<|return|>", "<|call|>"} <= texts or {"<|calls|>", "<|flush|>"} <= texts):
            end = to_id["<|end|>"]
            eog.discard(end)
            self._control.discard(end)
            self._types[end] = _USER_DEFINED
        if "</s>" in texts and texts & {"<|tool_response>", "<|plamo:eos|>"}:
            s_id = to_id["</s>"]
            eog.discard(s_id)
            self._control.discard(s_id)
            self._types[s_id] = _NORMAL
        self._eog = frozenset(eog)

        # Tokens matched literally in text, longest first (ties by id, for a deterministic order).
        specials = [i for i in range(n) if i in self._control or self._types[i] in (_UNKNOWN, _USER_DEFINED)]
        specials.sort(key=lambda i: (-len(tokens[i].encode("utf-8")), i))
        self._specials = [(tokens[i], i, i in self._control or self._types[i] == _UNKNOWN) for i in specials]

        self._pieces = [self._make_piece(i) for i in range(n)]
        self._hf = self._build_bpe(tokens, merges, to_id, _PRE_TOKENIZERS[pre], path)
        self._fingerprint: str | None = None

    @classmethod
    def from_gguf(cls, reader: gguf.GGUFReader, path: str) -> Tokenizer:
        """Build from a GGUF file's `tokenizer.ggml.*` metadata."""
        model = _field(reader, "tokenizer.ggml.model")
        if model is None:
            raise MtprunError(f"{path} has no tokenizer (the key tokenizer.ggml.model is missing).")
        if model != "gpt2":
            raise MtprunError(f"{path} uses the tokenizer model '{model}', but only byte-level BPE ('gpt2') "
                              f"is supported.")
        pre = _field(reader, "tokenizer.ggml.pre")
        if pre is None:
            raise MtprunError(f"{path} does not name its pre-tokenizer (tokenizer.ggml.pre is missing).")
        _check_pre(pre, path)
        tokens = _field(reader, "tokenizer.ggml.tokens")
        merges = _field(reader, "tokenizer.ggml.merges")
        for key, val in (("tokens", tokens), ("merges", merges)):
            if not isinstance(val, list):
                raise MtprunError(f"{path} lacks the tokenizer key tokenizer.ggml.{key}.")
        names = ("bos", "eos", "eot", "eom", "padding", "fim_pre", "fim_suf", "fim_mid", "fim_pad",
                 "fim_rep", "fim_sep")
        ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in names}
        return cls(tokens, merges, _field(reader, "tokenizer.ggml.token_type"), pre, ids, path)

    @staticmethod
    def _build_bpe(tokens: list[str], merges: list[str], to_id: dict[str, int], pattern: str,
                   path: str) -> _HFTokenizer:
        pairs: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for m in merges:
            cut = m.find(" ", 1)  # the first space after position 0 separates the two halves
            if cut < 0:
                continue
            pair = (m[:cut], m[cut + 1:])
            # llama.cpp keeps the first rank of a repeated merge; HF needs both halves and the result
            # in the vocabulary (a merge that breaks this never yields a token in llama.cpp either).
            if pair in seen or pair[0] not in to_id or pair[1] not in to_id or pair[0] + pair[1] not in to_id:
                continue
            seen.add(pair)
            pairs.append(pair)
        try:
            hf = _HFTokenizer(models.BPE(vocab=to_id, merges=pairs))
            hf.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
        except Exception as e:  # the tokenizers library reports malformed vocabularies this way
            raise MtprunError(f"{path} has a BPE vocabulary the tokenizer cannot load ({e}).") from e
        return hf

    def _make_piece(self, i: int) -> bytes:
        """Bytes of token i as llama_token_to_piece(special=true) renders them."""
        t, ty = self._tokens[i], self._types[i]
        if i in self._control or ty in (_UNKNOWN, _USER_DEFINED):
            return t.encode("utf-8")
        if ty == _NORMAL:
            return _decode_normal(t)
        if ty == _BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            return bytes([int(t[3:5], 16)])
        return b""  # unused / undefined tokens render as nothing

    # ---- encoding -------------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of text, as llama_tokenize(add_special=false, parse_special=special).

        User-defined tokens (e.g. <think>) are always matched as single tokens; control tokens
        (e.g. <|im_end|>) only when special is true.
        """
        if not text:
            return []
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates have no UTF-8 form; llama.cpp never sees them
            text = text.encode("utf-8", "replace").decode("utf-8")
        # Like llama.cpp: each special token in turn (longest first) splits every raw fragment at all
        # of its leftmost non-overlapping occurrences.
        frags: list[str | int] = [text]
        for t, tid, is_control in self._specials:
            if is_control and not special:
                continue
            if t not in text:
                continue
            out: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or t not in f:
                    out.append(f)
                    continue
                parts = f.split(t)
                for k, p in enumerate(parts):
                    if k:
                        out.append(tid)
                    if p:
                        out.append(p)
            frags = out
        raw = [f for f in frags if isinstance(f, str)]
        encoded = iter(self._hf.encode_batch(raw, add_special_tokens=False)) if raw else iter(())
        ids: list[int] = []
        for f in frags:
            if isinstance(f, int):
                ids.append(f)
            else:
                ids.extend(next(encoded).ids)
        return ids

    def pre_split(self, text: str) -> list[str]:
        """The pre-tokenizer's words for text with no special tokens (for tests and debugging)."""
        return [w for w, _ in self._hf.pre_tokenizer.pre_tokenize_str(text)]

    # ---- decoding -------------------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = True) -> bytes:
        """Raw bytes of one token; control tokens render as their text unless special is false."""
        if not 0 <= token_id < len(self._tokens):
            raise MtprunError(f"Token id {token_id} is outside the vocabulary of {len(self._tokens)} tokens.")
        if not special and (token_id in self._control or self._types[token_id] == _UNKNOWN):
            return b""
        return self._pieces[token_id]

    def detokenize(self, ids: list[int], special: bool = True) -> str:
        """Text of a token sequence (invalid UTF-8 becomes U+FFFD)."""
        return b"".join(self.token_to_piece(i, special) for i in ids).decode("utf-8", errors="replace")

    def stream(self, special: bool = True) -> StreamDecoder:
        """A fresh incremental decoder for generated tokens."""
        return StreamDecoder(self, special)

    # ---- vocabulary facts -----------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._tokens)

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def eot_id(self) -> int | None:
        return self._eot

    @property
    def pad_id(self) -> int | None:
        return self._pad

    @property
    def eog_ids(self) -> frozenset[int]:
        """Tokens that end generation (llama_vocab_is_eog)."""
        return self._eog

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def is_control(self, token_id: int) -> bool:
        return token_id in self._control

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as stored in the GGUF (byte-level characters for normal tokens)."""
        return self._tokens[token_id]

    def fingerprint(self) -> str:
        """sha256 of the token list as JSON (UTF-8, non-ASCII kept), as the fixture manifests hash it."""
        if self._fingerprint is None:
            data = json.dumps(self._tokens, ensure_ascii=False).encode("utf-8")
            self._fingerprint = hashlib.sha256(data).hexdigest()
        return self._fingerprint
