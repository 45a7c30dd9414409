"""Generation statistics: drafting and acceptance counts, and where the time went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepRecord:
    """One decoding step: the drafts proposed, how many the target accepted, the tokens emitted."""

    draft: list[int]
    accepted: int
    emitted: list[int]
    draft_seconds: float = 0.0  # the step up to its graph: choosing the depth, the MTP head's catch-up
    # the rest: the step's graph (drafts and verify batch), sampling, acceptance and rollback, and the depth
    # policy's learning from the step before (a cost of every step, that deeper steps pay for more tokens)
    verify_seconds: float = 0.0
    # the part of draft_seconds that wrote the MTP head's cache for earlier plain steps, and for how many
    catch_up_seconds: float = 0.0
    catch_up_rows: int = 0


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # prefill / draft / verify / rollback
    device_seconds: float | None = None  # GPU busy time of the decode steps, where the backend measures it
    # The adaptive depth policy, when it chose the depths: its estimates are read on demand (`auto`),
    # not copied every step, which would cost a small model several percent of its decode speed.
    policy: Any = None

    @property
    def auto(self) -> dict | None:
        estimates = getattr(self.policy, "estimates", None)
        return estimates() if estimates else None

    @property
    def drafted(self) -> int:
        return sum(len(s.draft) for s in self.steps)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.steps)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per step that drafted (1 + accepted drafts), as vLLM reports it."""
        drafting = [s for s in self.steps if s.draft]
        return sum(1 + s.accepted for s in drafting) / len(drafting) if drafting else 0.0

    @property
    def accepted_per_position(self) -> list[float]:
        """For draft position i: the fraction of drafts made at i that were accepted."""
        depth = max((len(s.draft) for s in self.steps), default=0)
        rates = []
        for i in range(depth):
            made = sum(1 for s in self.steps if len(s.draft) > i)
            kept = sum(1 for s in self.steps if len(s.draft) > i and s.accepted > i)
            rates.append(kept / made if made else 0.0)
        return rates

    @property
    def prefill_tokens_per_s(self) -> float:
        t = self.seconds.get("prefill", 0.0)
        return self.prompt_tokens / t if t > 0 else 0.0

    @property
    def decode_seconds(self) -> float:
        """Wall time of the decode loop (everything but the prefill)."""
        return sum(v for k, v in self.seconds.items() if k != "prefill")

    @property
    def decode_tokens_per_s(self) -> float:
        t = self.decode_seconds
        return self.generated / t if t > 0 else 0.0

    @property
    def depth_histogram(self) -> dict[int, int]:
        """How many steps drafted each number of tokens."""
        hist: dict[int, int] = {}
        for s in self.steps:
            hist[len(s.draft)] = hist.get(len(s.draft), 0) + 1
        return dict(sorted(hist.items()))

    def as_dict(self) -> dict:
        return {
            "depth_histogram": self.depth_histogram,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted_length": self.mean_accepted_length,
            "accepted_per_position": self.accepted_per_position,
            "steps": len(self.steps),
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "seconds": dict(self.seconds),
            **({"auto": auto} if (auto := self.auto) is not None else {}),
        }
