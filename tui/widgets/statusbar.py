"""The statistics bar: the runner's figures for the reply being generated (or the last one), the
draft depth, the context used, the backend and the model."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

BARS = " ▁▂▃▄▅▆▇█"


def position_bars(rates: list[float]) -> str:
    """One bar per draft position, its height the fraction accepted there."""
    return "".join(BARS[round(r * (len(BARS) - 1))] for r in rates)


def figures(stats: dict[str, Any] | None, depth: int | str, mtp: bool, n_ctx: int | None) -> dict[str, str]:
    """The bar's fields, formatted (the tests compare them with the runner's statistics)."""
    out: dict[str, str] = {}
    if stats:
        out["speed"] = f"{stats['decode_tokens_per_s']:.1f} tok/s"
        if stats["drafted"]:
            out["acceptance"] = f"accept {stats['acceptance_rate']:.0%}"
            out["mean"] = f"mean len {stats['mean_accepted_length']:.2f}"
            out["positions"] = "pos " + position_bars(stats["accepted_per_position"])
    out["depth"] = f"draft {depth}" if mtp else "MTP off"
    if n_ctx:
        used = (stats["prompt_tokens"] + stats["generated"]) if stats else 0
        out["context"] = f"ctx {used}/{n_ctx}"
    return out


class StatsBar(Static):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self.fields: dict[str, str] = {}

    def show(self, state: str, fields: dict[str, str], backend: str = "", model: str = "") -> None:
        self.fields = dict(fields, backend=backend, model=model)
        parts = [state, *fields.values(), backend, model]
        self.update(" │ ".join(p for p in parts if p))
