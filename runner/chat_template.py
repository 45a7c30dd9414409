"""Render Hugging Face chat templates (Jinja) the way `transformers` does, in a sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mtprun.runner.errors import MtprunError


class _TemplateRaised(Exception):
    """What the template's own raise_exception() throws (its text is meant for the user)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers replaces Jinja's tojson, which HTML-escapes and sorts keys, with plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    return _environment().from_string(template)


def _chatml(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """Plain ChatML, for models that ship no template."""
    out = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str):  # None, or a list of {"type": "text", "text": ...} parts
            content = "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
        out.append(f"<|im_start|>{m['role']}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def render_chat(template: str | None, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                enable_thinking: bool | None = None, bos_token: str = "", eos_token: str = "",
                tools: list[dict[str, Any]] | None = None) -> str:
    """The prompt text for a conversation, as transformers' apply_chat_template(tokenize=False) gives it.

    enable_thinking is passed to the template only when not None, so templates that test
    `enable_thinking is defined` see their default.
    """
    if template is None:
        return _chatml(messages, add_generation_prompt)
    context: dict[str, Any] = {
        "messages": messages, "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token, "eos_token": eos_token, "tools": tools,
    }
    if enable_thinking is not None:
        context["enable_thinking"] = enable_thinking
    try:
        return _compile(template).render(**context)
    except _TemplateRaised as e:
        raise MtprunError(f"The chat template rejected the conversation: {str(e).rstrip('.')}.") from None
    except jinja2.TemplateSyntaxError as e:
        raise MtprunError(f"The chat template is not valid Jinja (line {e.lineno}: {e.message}).") from None
    except Exception as e:  # anything else the template's code trips over while rendering
        raise MtprunError(f"The chat template failed to render ({type(e).__name__}: {str(e).rstrip('.')}).") from None
