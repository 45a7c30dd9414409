"""The Objective-C runtime through ctypes (no PyObjC): classes, selectors, objc_msgSend cast to each
message's C signature, NSString and NSError, autorelease pools. Nothing is loaded until the first
message is sent, so this module imports anywhere; off macOS that first use raises the backend's
one-line error."""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import c_char_p, c_void_p
from typing import Any

from mtprun.runner.errors import MtprunError

LIBOBJC = "/usr/lib/libobjc.A.dylib"  # dlopen finds these in the dyld shared cache (no file on disk)
FOUNDATION = "/System/Library/Frameworks/Foundation.framework/Foundation"
NEEDS = "the Metal backend needs macOS and an Apple GPU"


class _Runtime:
    """libobjc with Foundation's classes registered."""

    def __init__(self) -> None:
        if sys.platform != "darwin":
            raise MtprunError(f"{NEEDS} (this is {platform.system()}).")
        try:
            lib = ctypes.CDLL(LIBOBJC)
            ctypes.CDLL(FOUNDATION)
        except OSError as exc:
            raise MtprunError(f"{NEEDS}; the Objective-C runtime did not load ({exc}).") from None
        for name, args, res in (("objc_getClass", [c_char_p], c_void_p), ("sel_registerName", [c_char_p], c_void_p),
                                ("objc_autoreleasePoolPush", [], c_void_p), ("objc_autoreleasePoolPop", [c_void_p], None)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self.lib = lib
        self.msg_send = ctypes.cast(lib.objc_msgSend, c_void_p).value


_RUNTIME: _Runtime | None = None


def runtime() -> _Runtime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = _Runtime()
    return _RUNTIME


class Message:
    """One Objective-C message with its C signature: objc_msgSend cast to
    restype (*)(id receiver, SEL, *argtypes). The cast is required, not a convenience: on arm64
    objc_msgSend must be called through the method's exact prototype, never as a variadic function
    (and no method here returns a struct, so objc_msgSend_stret is never needed)."""

    __slots__ = ("_fn", "_sel", "argtypes", "restype", "selector")

    def __init__(self, selector: str, restype: Any, *argtypes: Any) -> None:
        self.selector, self.restype, self.argtypes = selector, restype, argtypes
        self._fn: Any = None
        self._sel: int | None = None

    def __call__(self, receiver: Any, *args: Any) -> Any:
        if self._fn is None:  # bound on first send
            rt = runtime()
            self._sel = rt.lib.sel_registerName(self.selector.encode())
            self._fn = ctypes.CFUNCTYPE(self.restype, c_void_p, c_void_p, *self.argtypes)(rt.msg_send)
        return self._fn(receiver, self._sel, *args)


new = Message("new", c_void_p)
release = Message("release", None)
_string_with_utf8 = Message("stringWithUTF8String:", c_void_p, c_char_p)
_utf8 = Message("UTF8String", c_char_p)
_localized_description = Message("localizedDescription", c_void_p)


def cls(name: str) -> int:
    handle = runtime().lib.objc_getClass(name.encode())
    if not handle:
        raise MtprunError(f"{NEEDS}; the Objective-C class {name} does not exist here.")
    return handle


def create(class_name: str) -> int:
    """[ClassName new]: an object the caller owns (release it)."""
    return new(cls(class_name))


def nsstring(text: str) -> int:
    """An autoreleased NSString: use it inside an autorelease pool."""
    return _string_with_utf8(cls("NSString"), text.encode())


def text(nsstring_handle: int | None) -> str:
    raw = _utf8(nsstring_handle) if nsstring_handle else None
    return raw.decode(errors="replace") if raw else ""


def error_text(nserror: int | None) -> str:
    """An NSError's localized description (call inside the pool that holds the error)."""
    return text(_localized_description(nserror)) if nserror else "no error was given"


@contextmanager
def autorelease_pool() -> Iterator[None]:
    """Autoreleased objects (command buffers, encoders, strings, errors) are freed on leaving:
    Python runs no run loop that would drain a pool."""
    lib = runtime().lib
    pool = lib.objc_autoreleasePoolPush()
    try:
        yield
    finally:
        lib.objc_autoreleasePoolPop(pool)
