"""Chat-template rendering: the real Qwen3.5 template, the ChatML fallback and error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from mtprun.runner.chat_template import render_chat
from mtprun.runner.errors import MtprunError
from mtprun.runner.tokenizer import Tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
TINYCODER = FIXTURES / "tinycoder"

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Write hello world in Python."},
]

needs_fixtures = pytest.mark.skipif(not TINYCODER.is_dir(), reason="shared fixtures not present")


@pytest.fixture(scope="module")
def qwen_template() -> str:
    if not TINYCODER.is_dir():
        pytest.skip("shared fixtures not present")
    return json.loads((TINYCODER / "hf" / "tokenizer_config.json").read_text())["chat_template"]


@needs_fixtures
def test_gguf_carries_the_same_template(qwen_template: str) -> None:
    for model in ("tiny-qwen35", "tiny-qwen35moe", "tinycoder"):
        reader = gguf.GGUFReader(FIXTURES / model / "llamacpp-q8_0.gguf")
        assert reader.fields["tokenizer.chat_template"].contents() == qwen_template


@needs_fixtures
def test_chat_prompt_layout_matches_reference(qwen_template: str) -> None:
    ref = json.loads((TINYCODER / "ref" / "tokens.json").read_text())["prompts"]["chat"]
    text = render_chat(qwen_template, CHAT, add_generation_prompt=True)
    assert text == ref["text"]
    # the template's default (enable_thinking undefined) and True both open a <think> block
    assert render_chat(qwen_template, CHAT, enable_thinking=True) == ref["text"]
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    tok = Tokenizer.from_gguf(gguf.GGUFReader(TINYCODER / "llamacpp-q8_0.gguf"), "tinycoder")
    assert tok.tokenize(text) == ref["ids"]


@needs_fixtures
def test_thinking_disabled_closes_an_empty_think_block(qwen_template: str) -> None:
    text = render_chat(qwen_template, CHAT, enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    no_prompt = render_chat(qwen_template, CHAT, add_generation_prompt=False)
    assert no_prompt.endswith("Write hello world in Python.<|im_end|>\n")


@needs_fixtures
def test_history_keeps_reasoning_only_after_the_last_query(qwen_template: str) -> None:
    messages = [
        *CHAT,
        {"role": "assistant", "content": "<think>\nplan\n</think>\n\nprint('hello world')"},
        {"role": "user", "content": "Now in C."},
    ]
    text = render_chat(qwen_template, messages)
    # earlier assistant turns lose their <think> block; the prompt ends with a fresh one
    assert "<|im_start|>assistant\nprint('hello world')<|im_end|>\n" in text
    assert "plan" not in text
    assert text.endswith("<|im_start|>user\nNow in C.<|im_end|>\n<|im_start|>assistant\n<think>\n")


@needs_fixtures
def test_template_errors_become_one_sentence(qwen_template: str) -> None:
    with pytest.raises(MtprunError, match="No messages provided"):
        render_chat(qwen_template, [])
    with pytest.raises(MtprunError, match="System message must be at the beginning"):
        render_chat(qwen_template, [CHAT[1], CHAT[0]])


def test_chatml_fallback() -> None:
    text = render_chat(None, CHAT)
    assert text == ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                    "<|im_start|>user\nWrite hello world in Python.<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(None, CHAT, add_generation_prompt=False).endswith("Python.<|im_end|>\n")


def test_environment_matches_transformers() -> None:
    # trim_blocks / lstrip_blocks, loop controls, HF's tojson (no HTML escaping, key order kept)
    tpl = ("{% for m in messages %}\n  {% if loop.index > 1 %}{% break %}{% endif %}\n"
           "{{ m | tojson }}\n{% endfor %}{{ bos_token }}{{ tools is none }}{{ enable_thinking is defined }}")
    msgs = [{"role": "user", "content": "<é & 'q'>"}, {"role": "x", "content": ""}]
    out = render_chat(tpl, msgs, bos_token="<s>")
    assert out == '{"role": "user", "content": "<é & \'q\'>"}\n<s>TrueFalse'
    assert render_chat("{{ enable_thinking }}", msgs, enable_thinking=False) == "False"
    assert len(render_chat("{{ strftime_now('%Y') }}", msgs)) == 4


@pytest.mark.parametrize("tpl", [
    "{% for %}",                                      # syntax error
    "{{ raise_exception('bad input') }}",             # the template's own refusal
    "{{ ''.__class__.__mro__ }}",                     # sandbox: private attribute
    "{% set _ = messages.append(1) %}",               # sandbox: immutable arguments
    "{{ messages[0].content + 1 }}",                  # runtime type error
])
def test_bad_templates_raise_mtprun_error(tpl: str) -> None:
    with pytest.raises(MtprunError) as err:
        render_chat(tpl, [{"role": "user", "content": "hi"}])
    assert str(err.value).startswith("The chat template")
