"""The plain line REPL (`--no-tui`, or stdin / stdout not a terminal): same sessions, same commands."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TextIO

from mtprun.runner.errors import MtprunError
from mtprun.tui import commands
from mtprun.tui.engine import Batch, Conversation
from mtprun.tui.export import FORMATS, export, stats_line

_EMPTY_THINK = re.compile(r"^<think>\s*</think>\s*")


class Repl:
    def __init__(self, conv: Conversation, stdin: TextIO, stdout: TextIO, stderr: TextIO, interactive: bool) -> None:
        self.conv, self.stdin, self.stdout, self.stderr, self.interactive = conv, stdin, stdout, stderr, interactive
        conv.on_warning = lambda m: self.say(f"mtprun: warning: {m}")

    def say(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)

    def run(self) -> int:
        if self.conv.read_only:
            self.say(f"mtprun: {self.conv.read_only}")
        self.say("mtprun chat: type a message (/help lists commands); an empty line or Ctrl-D ends.")
        while True:
            if self.interactive:
                self.stderr.write("> ")
                self.stderr.flush()
            line = self.stdin.readline()
            if not line.strip():
                return 0
            text = line.rstrip("\n")
            try:
                if text.startswith("/"):
                    if self.command(text) == "quit":
                        return 0
                else:
                    self.conv.add_user(text)
                    self.reply()
            except MtprunError as e:
                self.say(f"mtprun: {e}")

    def reply(self) -> None:
        """Generate in a helper thread, so that Ctrl-C stops the reply (keeping it) rather than the REPL."""
        stop, done = threading.Event(), threading.Event()
        failed: list[BaseException] = []

        first = [True]

        def write(batch: Batch) -> None:
            # the template's empty think block (thinking off) opens the first batch: not worth printing
            text = _EMPTY_THINK.sub("", batch.text) if first[0] else batch.text
            first[0] = False
            self.stdout.write(text)
            self.stdout.flush()

        def work() -> None:
            try:
                self.conv.reply(write, stop)
            except BaseException as e:  # re-raised in the REPL's thread
                failed.append(e)
            finally:
                done.set()

        threading.Thread(target=work, daemon=True, name="mtprun-generate").start()
        while not done.is_set():
            try:
                done.wait(0.1)
            except KeyboardInterrupt:
                stop.set()
        self.stdout.write("\n")
        self.stdout.flush()
        if failed:
            raise failed[0]
        reply = self.conv.last_reply()
        if reply is not None:
            self.say(stats_line(reply.stats) + (" (stopped)" if reply.stopped else ""))

    def command(self, line: str) -> str:
        conv = self.conv
        name, arg = commands.parse(line)
        done = commands.apply_setting(conv.settings, name, arg, conv.engine.max_depth if conv.engine else 0)
        if done is not None:
            conv.save_settings()
            self.say(done)
        elif name == "help":
            for c in commands.COMMANDS:
                if not c.tui_only:
                    self.say(f"  {c.usage:24} {c.help}")
        elif name == "clear":
            conv.new_session()
            self.say("new conversation")
        elif name == "regen":
            conv.drop_last_reply()
            self.reply()
        elif name == "export":
            fmt, _, path = arg.partition(" ")
            if fmt not in FORMATS:
                raise commands.CommandError("/export takes md or json, then optionally a file name.")
            if conv.session_id is None:
                raise commands.CommandError("nothing to export yet.")
            out = Path(path or f"mtprun-session-{conv.session_id}.{fmt}")
            try:
                out.write_text(export(conv.store, conv.session_id, fmt), encoding="utf-8")
            except OSError as e:
                raise commands.CommandError(f"cannot write {out} ({e.strerror}).") from None
            self.say(f"exported to {out}")
        elif name != "quit":
            self.say(f"/{name} works in the full-screen chat only.")
        return name
