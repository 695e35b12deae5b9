"""The round planner: each round's source and length, from acceptance and costs measured while generating.

It predicts each choice's tokens per second with the package's one speedup model (`sdfp_hf.costs`):
a round proposing `n` tokens yields `expected_tokens(a, n)` under the source's measured acceptance `a`
and costs `T0 + n * beta` to verify (fitted online) plus, for the draft, `n` draft steps.
"""

from __future__ import annotations

from dataclasses import astuple

from ..costs import expected_tokens, throughput
from .calls import current_call
from .protocol import SelfDraft

__all__ = ["Acceptance", "RoundPlanner", "VerifyTime", "planner_of"]


class Acceptance:
    """Per-token acceptance a of one proposal source, from recent rounds.

    Estimated as accepted / (accepted + rejections): the geometric model's estimate, which stays
    unbiased when rounds stop early (draft length, confidence, end of sequence).
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.accepted, self.rejected = 1.0, 1.0  # a weak prior of a = 0.5

    def record(self, proposed: int, accepted: int) -> None:
        self.accepted = self.decay * self.accepted + accepted
        self.rejected = self.decay * self.rejected + (accepted < proposed)

    @property
    def rate(self) -> float:
        return min(self.accepted / (self.accepted + self.rejected), 0.999)

    def expected_tokens(self, proposed: int) -> float:
        """Tokens a round yields with `proposed` candidates: accepted ones plus the target's own."""
        return expected_tokens(self.rate, proposed)


class VerifyTime:
    """The time of a verification pass as T0 + beta * n (n: candidates verified).

    Fitted by exponentially weighted least squares over recent rounds of varied widths (lookups and
    drafts of different lengths, rounds proposing nothing), so neither figure is biased by the other.
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.weight = self.sum_n = self.sum_nn = self.sum_t = self.sum_nt = 0.0
        self.base: float | None = None  # T0
        self.per_token = 0.0  # beta

    def record(self, verified: int, seconds: float) -> None:
        d = self.decay
        self.weight = d * self.weight + 1.0
        self.sum_n = d * self.sum_n + verified
        self.sum_nn = d * self.sum_nn + verified * verified
        self.sum_t = d * self.sum_t + seconds
        self.sum_nt = d * self.sum_nt + verified * seconds
        mean_n, mean_t = self.sum_n / self.weight, self.sum_t / self.weight
        variance = self.sum_nn / self.weight - mean_n**2
        if variance > 0.5:  # widths varied enough to tell T0 from beta; else keep the last beta
            self.per_token = max(0.0, (self.sum_nt / self.weight - mean_n * mean_t) / variance)
        self.base = max(mean_t - self.per_token * mean_n, 0.05 * mean_t)


class RoundPlanner:
    """Chooses each round's proposal source and length, from measurements taken during generation.

    A round proposing n tokens takes T_verify(n) = T0 + n * beta (beta is near 0 where verification is
    memory-bound: GPUs, bf16 on CPUs; it is not in fp32 on CPUs) plus, for the draft, n * T_draft; a
    lookup costs nothing to propose. It yields `expected_tokens(n)` under the source's acceptance (the
    draft's, or that of lookup matches of the same n-gram order). Each round takes the source and n
    that maximise tokens per second; proposing nothing is plain decoding. The first round proposes
    nothing, to measure T0.
    """

    DECAY = 0.9

    def __init__(self, max_draft: int, max_lookup: int, probe_every: int):
        self.max_draft, self.max_lookup, self.probe_every = max_draft, max_lookup, probe_every
        self.draft = Acceptance(self.DECAY)
        self.lookups: dict[int, Acceptance] = {}  # by n-gram order of the match
        self.verify = VerifyTime(0.95)
        self.draft_seconds: float | None = None  # T_draft
        self.rounds_since_draft = 0

    @property
    def base_seconds(self) -> float | None:
        return self.verify.base

    @property
    def per_token_seconds(self) -> float:
        return self.verify.per_token

    def lookup(self, order: int) -> Acceptance:
        return self.lookups.setdefault(order, Acceptance(self.DECAY))

    def record(
        self,
        source: str,
        proposed: int,
        accepted: int,
        verify_seconds: float,
        draft_seconds: float,
        order: int = 0,
        verified: int | None = None,
    ) -> None:
        """Record a finished round of `proposed` tokens from `source` (lookup: a match of n-gram `order`).

        `verified` is the number of candidates the target verified, when more than `proposed` (a draft
        chain extended by a lookup).
        """
        if source == "prefill":  # the target's pass over the prompt says nothing about a decoding step
            return
        self.verify.record(proposed if verified is None else verified, verify_seconds)
        if source == "lookup":
            self.lookup(order).record(proposed, accepted)
        if source != "draft" or not proposed:
            self.rounds_since_draft += 1
            return
        self.rounds_since_draft = 0
        step = draft_seconds / proposed
        old = step if self.draft_seconds is None else self.draft_seconds
        self.draft_seconds = self.DECAY * old + (1 - self.DECAY) * step
        self.draft.record(proposed, accepted)

    def _best(self, acceptance: Acceptance, limit: int, step_seconds: float) -> tuple[int, float]:
        """The n in 1..limit with the most tokens per second, and that rate."""
        best, best_rate = 0, 0.0
        for n in range(1, limit + 1):
            verify = self.base_seconds + n * self.per_token_seconds
            rate = throughput(acceptance.expected_tokens(n), n, step_seconds, verify)
            if rate > best_rate:
                best, best_rate = n, rate
        return best, best_rate

    def plan(self, lookup_order: int | None) -> tuple[str, int]:
        """This round's source and length: ``("lookup" | "draft" | "none", n)``.

        Args:
            lookup_order (`int`, *optional*): n-gram order of this round's lookup match, if any.
        """
        if self.base_seconds is None:  # nothing measured yet: a plain round measures T0
            return "none", 0
        choices = [("none", 0, 1.0 / self.base_seconds)]
        if lookup_order:
            choices.append(("lookup", *self._best(self.lookup(lookup_order), self.max_lookup, 0.0)))
        if self.draft_seconds is None:  # never drafted: try it
            choices.append(("draft", self.max_draft, float("inf")))
        else:
            choices.append(("draft", *self._best(self.draft, self.max_draft, self.draft_seconds)))
        source, length, _ = max(choices, key=lambda choice: choice[2])
        if source != "draft" and self.rounds_since_draft >= self.probe_every:
            return "draft", 1  # a probe, to notice when drafting pays again
        return source, length

    def extension_length(self, order: int) -> int:
        """How many tokens of a lookup match to append to a draft chain (0 when they do not pay)."""
        if self.base_seconds is None:
            return self.max_lookup
        length, rate = self._best(self.lookup(order), self.max_lookup, 0.0)
        return length if rate > 1.0 / self.base_seconds else 0


def planner_of(assistant: SelfDraft, max_draft: int) -> RoundPlanner:
    """The draft's round planner, kept on the draft between `generate` calls.

    What it measured (the machine's step costs, the acceptance of the draft and of lookups) holds for
    the next call too, so a call does not start learning from nothing: short generations would otherwise
    spend a good part of their rounds on it. A new planner is made when the settings it plans for change
    (draft length, drafting options, the draft's dtype or device). A call that runs while another holds
    the kept planner gets one of its own (`sdfp_hf.drafting.calls`).
    """
    options = assistant.drafting
    settings = (max_draft, astuple(options), assistant.dtype, assistant.device)
    return current_call(assistant).state(
        "chain", settings, lambda: RoundPlanner(max_draft, options.lookup_tokens, options.probe_every)
    )
