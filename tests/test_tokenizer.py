"""The tokenizer against llama.cpp's answers in the shared fixtures."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import gguf
import pytest

from mtprun.runner.errors import MtprunError
from mtprun.runner.tokenizer import _CHAR_TO_BYTE, Tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
MODELS = ("tiny-qwen35", "tiny-qwen35moe", "tinycoder")
FULL_VOCAB = FIXTURES / "qwen35-vocab" / "ggml-vocab-qwen35.gguf"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")


def _json(rel: str) -> dict:
    p = FIXTURES / rel
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


@lru_cache(maxsize=None)
def _reader(path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)  # the full vocabulary takes gguf-py ~10 s to parse: read it once


@lru_cache(maxsize=None)
def _tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(_reader(path), str(path))


def _cases() -> list[tuple[Path, str, dict]]:
    """(vocab file, label, case) for every tokenizer case in the fixtures."""
    out: list[tuple[Path, str, dict]] = []
    full = _json("qwen35-vocab/tokens.json")
    for i, c in enumerate(full.get("cases", [])):
        out.append((FIXTURES / "qwen35-vocab" / full["vocab"], f"qwen35-vocab-{i}", c))
    for m in MODELS:
        vt = _json(f"{m}/ref/vocab-tokens.json")
        for i, c in enumerate(vt.get("cases", [])):
            out.append((FIXTURES / m / vt["vocab"], f"{m}-vocab-{i}", c))
        for name, c in _json(f"{m}/ref/tokens.json").get("prompts", {}).items():
            out.append((FIXTURES / m / "llamacpp-q8_0.gguf", f"{m}-prompt-{name}", c))
    return out


CASES = _cases()


@pytest.mark.parametrize("vocab,case", [(v, c) for v, _, c in CASES], ids=[i for _, i, _ in CASES])
def test_ids_match_llama_cpp(vocab: Path, case: dict) -> None:
    tok = _tokenizer(vocab)
    assert tok.tokenize(case["text"], special=True) == case["ids"]
    assert tok.tokenize(case["text"], special=False) == case["ids_nospecial"]
    if "pieces_hex" in case:
        assert [tok.token_to_piece(i).hex() for i in case["ids"]] == case["pieces_hex"]
    # byte-level BPE loses nothing: the pieces spell the text back
    assert tok.detokenize(case["ids"]) == case["text"]
    assert tok.detokenize(case["ids_nospecial"]) == case["text"]


def test_full_vocab_facts() -> None:
    if not FULL_VOCAB.is_file():
        pytest.skip("full vocabulary fixture missing")
    reader = _reader(FULL_VOCAB)
    t0 = time.perf_counter()
    tok = Tokenizer.from_gguf(reader, str(FULL_VOCAB))
    assert time.perf_counter() - t0 < 8.0  # a couple of seconds on a slow machine
    assert tok.n_vocab == 151936
    assert tok.eos_id == 151643 and tok.bos_id == 151643 and tok.pad_id == 151643
    assert tok.eot_id == 151645  # <|im_end|>
    # llama.cpp's EOG set for this vocabulary: <|endoftext|>, <|im_end|>, and '</s>' (its text list
    # names '</s>', which this vocabulary has as an ordinary token).
    assert tok.eog_ids == {151643, 151645, 128247}
    assert tok.is_control(151644) and tok.is_control(128247) and not tok.is_control(9707)
    assert tok.token_to_piece(151645) == b"<|im_end|>"
    assert tok.token_to_piece(151645, special=False) == b""
    # a control-forced EOG text is only split out with special parsing on, like llama.cpp
    assert tok.tokenize("a</s>b") == [64, 128247, 65]
    assert 128247 not in tok.tokenize("a</s>b", special=False)


@pytest.mark.parametrize("model", MODELS)
def test_model_vocab_facts(model: str) -> None:
    path = FIXTURES / model / "llamacpp-q8_0.gguf"
    if not path.is_file():
        pytest.skip(f"{model} missing")
    tok = _tokenizer(path)
    n = tok.n_vocab
    # the last 9 tokens are <|endoftext|> <|im_start|> <|im_end|> (control) then 6 user-defined tags
    endoftext, im_start, im_end, think = n - 9, n - 8, n - 7, n - 6
    assert tok.token_text(endoftext) == "<|endoftext|>" and tok.token_text(think) == "<think>"
    assert tok.eos_id == im_end and tok.eot_id == im_end and tok.pad_id == endoftext
    assert tok.bos_id is None
    assert tok.eog_ids == {endoftext, im_end}
    assert tok.is_control(im_start) and not tok.is_control(think)
    # user-defined tokens are matched even without special parsing; control tokens are not
    assert tok.tokenize("<think>", special=False) == [think]
    assert im_start not in tok.tokenize("<|im_start|>", special=False)
    manifest = json.loads((FIXTURES / model / "manifest" / "llamacpp-q8_0.json").read_text())
    assert tok.fingerprint() == manifest["metadata"]["tokenizer.ggml.tokens"]["sha256"]


def _stream_chunks(tok: Tokenizer, ids: list[int]) -> list[str]:
    dec = tok.stream()
    chunks = [dec.feed(i) for i in ids]
    chunks.append(dec.flush())
    return chunks


@pytest.mark.parametrize("model", ["tinycoder", "qwen35-vocab"])
def test_stream_decoder_never_splits_a_character(model: str) -> None:
    path = FULL_VOCAB if model == "qwen35-vocab" else FIXTURES / model / "llamacpp-q8_0.gguf"
    if not path.is_file():
        pytest.skip(f"{model} missing")
    tok = _tokenizer(path)
    text = "Emoji 🚀🦙 😶‍🌫️, CJK 我想在apple工作 日本語のテキスト 한국어, Khmer កាន់តែ, done.<|im_end|>"
    ids = tok.tokenize(text)
    chunks = _stream_chunks(tok, ids)
    assert "".join(chunks) == text
    assert all("\ufffd" not in c for c in chunks)
    for c in chunks:  # every chunk is whole characters: it survives a UTF-8 round trip
        assert c.encode("utf-8").decode("utf-8") == c
    if model == "tinycoder":  # its small vocabulary spells emoji byte by byte: bytes were held back
        assert "" in chunks[:-1]


def test_stream_decoder_flush_shows_incomplete_tail() -> None:
    path = FIXTURES / "tinycoder" / "llamacpp-q8_0.gguf"
    if not path.is_file():
        pytest.skip("tinycoder missing")
    tok = _tokenizer(path)
    ids = tok.tokenize("🚀")
    assert len(ids) > 1
    dec = tok.stream()
    assert [dec.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert dec.flush() == "\ufffd"


def test_unicode16_letters_split_like_llama_cpp() -> None:
    # llama.cpp's tables predate Unicode 16, so U+105C0 (Todhri) and U+0897 (an Arabic mark) are
    # unassigned there and behave like punctuation: they start a new word in front of a letter.
    path = FIXTURES / "tinycoder" / "llamacpp-q8_0.gguf"
    if not path.is_file():
        pytest.skip("tinycoder missing")
    tok = _tokenizer(path)
    for ch in ("\U000105C0", "\u0897"):
        words = tok.pre_split(f"a{ch}b")
        assert len(words) == 2 and words[0] == "a"
    assert len(tok.pre_split("aéb")) == 1  # an assigned letter stays inside the word


def _write_gguf(path: Path, model: str, pre: str | None, merges: bool = True) -> gguf.GGUFReader:
    w = gguf.GGUFWriter(str(path), arch="qwen35")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    tokens = [*_CHAR_TO_BYTE, "ĠĠ"]
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    if merges:
        w.add_token_merges(["Ġ Ġ"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return gguf.GGUFReader(path)


def test_small_written_vocab_works(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    tok = Tokenizer.from_gguf(_write_gguf(path, "gpt2", "qwen2"), str(path))
    idx = [*_CHAR_TO_BYTE].index
    # words "a", "   " (the last space goes with "b"), " b"; "ĠĠ" is the one merge
    assert tok.tokenize("a    b") == [idx("a"), 256, idx("Ġ"), idx("Ġ"), idx("b")]
    assert tok.detokenize(tok.tokenize("x  \n y")) == "x  \n y"
    assert tok.eog_ids == frozenset() and tok.eos_id is None


@pytest.mark.parametrize("model,pre,merges,words", [
    ("llama", "qwen35", True, "tokenizer model 'llama'"),
    ("gpt2", "llama-bpe", True, "pre-tokenizer 'llama-bpe'"),
    ("gpt2", None, True, "tokenizer.ggml.pre is missing"),
    ("gpt2", "qwen35", False, "tokenizer.ggml.merges"),
])
def test_unsupported_files_raise(tmp_path: Path, model: str, pre: str | None, merges: bool, words: str) -> None:
    path = tmp_path / "bad.gguf"
    reader = _write_gguf(path, model, pre, merges)
    with pytest.raises(MtprunError) as err:
        Tokenizer.from_gguf(reader, str(path))
    assert words in str(err.value) and str(path) in str(err.value)
