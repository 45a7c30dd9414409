"""What `mtprun chat` and `mtprun sessions` add to the command line (runner/cli.py wires them in).

Errors are raised as MtprunError, which `mtprun`'s main prints as one line with a non-zero status.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mtprun.runner.errors import MtprunError
from mtprun.tui.export import FORMATS, export
from mtprun.tui.store import Store, StoreError

if TYPE_CHECKING:  # the runner is imported only when a chat starts, so `mtprun --help` stays quick
    from mtprun.runner.api import Model
    from mtprun.tui.engine import Conversation, Engine, Settings

LAST = -1  # --resume without an id


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="where sessions are kept (default: $MTPRUN_DATA_DIR, else the XDG data directory)")


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tui", action="store_true",
                        help="the plain line REPL (also used when stdin or stdout is not a terminal)")
    parser.add_argument("--resume", nargs="?", type=int, const=LAST, default=None, metavar="ID",
                        help="continue a saved session (the last one when no ID is given)")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--no-think", action="store_true", help="start with thinking off (enable_thinking=false)")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file with key bindings (default: $MTPRUN_CONFIG, else the XDG config directory)")
    _data_dir_arg(parser)


def initial_settings(args: argparse.Namespace, draft_depth: int | str, sampling: dict) -> Settings:
    from mtprun.tui.engine import Settings

    return Settings(mtp=draft_depth != 0, draft_depth=draft_depth or "auto", n_predict=args.n_predict,
                    thinking=not args.no_think, system=args.system, **sampling)


def open_store(data_dir: str | None) -> tuple[Store, str | None]:
    """The session store, or (when it cannot be used) an in-memory one and the reason; nothing on disk is touched."""
    try:
        return Store.in_dir(data_dir), None
    except StoreError as e:
        return Store(":memory:"), f"sessions will not be saved: {e}"


def run_chat(args: argparse.Namespace, load_model: Callable[[], Model], draft_depth: int | str, sampling: dict) -> int:
    """`mtprun chat`: the Textual app, or the plain REPL with --no-tui or without a terminal.

    `load_model` is called once (in a worker thread for the app, so the UI is up while it loads);
    `draft_depth` is the depth asked for (a number, "auto", or 0 with MTP off); `sampling` holds temp/top_k/top_p/min_p/seed.
    """
    settings = initial_settings(args, draft_depth, sampling)
    store, store_note = open_store(args.data_dir)
    try:
        if args.no_tui or not (sys.stdin.isatty() and sys.stdout.isatty()):
            return _run_repl(args, store, store_note, load_model, settings)
        from mtprun.tui.app import ChatApp
        from mtprun.tui.config import load_keymap

        keymap, config_note = load_keymap(args.config)
        app = ChatApp(store, load_model, settings, resume=args.resume,
                      notes=[n for n in (store_note, config_note) if n], keymap=keymap)
        app.run()
        return app.return_code or 0
    finally:
        store.close()


def _run_repl(args: argparse.Namespace, store: Store, store_note: str | None,
              load_model: Callable[[], Model], settings: Settings) -> int:
    from mtprun.tui.engine import Conversation, Engine
    from mtprun.tui.repl import Repl

    if store_note:
        print(f"mtprun: warning: {store_note}", file=sys.stderr)
    engine = Engine(load_model())
    if settings.mtp and engine.max_depth == 0:
        print(f"mtprun: {Path(engine.model.path).name} has no MTP head; drafting is off.", file=sys.stderr)
        settings.mtp = False
    conv = resume(store, args.resume, engine, settings) if args.resume is not None else Conversation(store, engine, settings)
    return Repl(conv, sys.stdin, sys.stdout, sys.stderr, sys.stdin.isatty()).run()


def resume(store: Store, session_id: int, engine: Engine | None, settings: Settings) -> Conversation:
    from mtprun.tui.engine import Conversation

    if session_id == LAST:
        last = store.last_session()
        if last is None:
            raise StoreError("there is no saved session to resume.")
        session_id = last.id
    return Conversation.resume(store, session_id, engine, settings)


# -- mtprun sessions
def add_sessions_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _data_dir_arg(common)
    p = subparsers.add_parser("sessions", help="list, show, export or delete saved chat sessions")
    sub = p.add_subparsers(dest="sessions_command", required=True)
    sub.add_parser("list", parents=[common], help="the saved sessions, newest first")
    show = sub.add_parser("show", parents=[common], help="print a session as Markdown")
    show.add_argument("id", type=int)
    exp = sub.add_parser("export", parents=[common], help="write a session as Markdown or JSON")
    exp.add_argument("id", type=int)
    exp.add_argument("--format", choices=FORMATS, default="md")
    exp.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: standard output)")
    rm = sub.add_parser("rm", parents=[common], help="delete sessions")
    rm.add_argument("ids", type=int, nargs="+", metavar="ID")
    return p


def run_sessions(args: argparse.Namespace) -> int:
    store = Store.in_dir(args.data_dir)  # StoreError: the caller prints it and exits non-zero
    try:
        cmd = args.sessions_command
        if cmd == "list":
            for s in store.sessions():
                model = Path(s.model.path).name if s.model else "-"
                print(f"{s.id:>5}  {_when(s.updated)}  {s.n_messages:>4} msgs  {model:24}  {s.title}")
        elif cmd == "show":
            print(export(store, args.id, "md"))
        elif cmd == "export":
            text = export(store, args.id, args.format)
            if args.output is None:
                sys.stdout.write(text + "\n")
            else:
                try:
                    args.output.write_text(text, encoding="utf-8")
                except OSError as e:
                    raise MtprunError(f"cannot write {args.output} ({e.strerror}).") from None
        else:
            for sid in args.ids:
                store.session(sid)  # all ids checked before any is deleted
            for sid in args.ids:
                store.delete_session(sid)
        return 0
    finally:
        store.close()


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")

