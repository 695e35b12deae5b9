"""`DraftStats`: what a draft proposed and what the target accepted, round by round, per source.

Written by the decoding round (`sdfp_hf.drafting`), read by users (`draft.stats`), the benchmark and
the replay. It knows nothing of models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DraftStats"]


@dataclass
class DraftStats:
    """Acceptance statistics of the last `generate` call that used this draft (of all the calls that
    overlapped it, when threads share the draft: `sdfp_hf.drafting.calls`).

    `drafted_per_round[i]` tokens were proposed in verification round `i` and the target accepted
    `accepted_per_round[i]` of them; `source_per_round[i]` says where they came from (`"draft"`: the
    layer-skipping draft, `"lookup"`: prompt lookup, ...). Rounds in which nothing was proposed are not
    counted.
    """

    drafted_per_round: list[int] = field(default_factory=list)
    accepted_per_round: list[int] = field(default_factory=list)
    source_per_round: list[str] = field(default_factory=list)
    nodes_by_source: dict[str, list[int]] = field(default_factory=dict)

    def record(
        self, drafted: int, accepted: int, source: str = "draft", per_source: dict[str, list[int]] | None = None
    ) -> None:
        """Record a round; `per_source` (tree rounds): per source, [nodes proposed, nodes accepted] (a node
        proposed by several sources counts for each)."""
        self.drafted_per_round.append(drafted)
        self.accepted_per_round.append(accepted)
        self.source_per_round.append(source)
        for name, (proposed, taken) in (per_source or {source: [drafted, accepted]}).items():
            row = self.nodes_by_source.setdefault(name, [0, 0, 0])
            row[0] += 1
            row[1] += proposed
            row[2] += taken

    def merge(self, other: DraftStats) -> None:
        """Add `other`'s rounds to these (the rounds of calls that ran at the same time)."""
        self.drafted_per_round.extend(other.drafted_per_round)
        self.accepted_per_round.extend(other.accepted_per_round)
        self.source_per_round.extend(other.source_per_round)
        for name, (rounds, proposed, taken) in other.nodes_by_source.items():
            row = self.nodes_by_source.setdefault(name, [0, 0, 0])
            row[0] += rounds
            row[1] += proposed
            row[2] += taken

    def reset(self) -> None:
        self.drafted_per_round.clear()
        self.accepted_per_round.clear()
        self.source_per_round.clear()
        self.nodes_by_source.clear()

    def rounds_from(self, source: str) -> int:
        """Rounds whose candidates came from `source`."""
        return self.source_per_round.count(source)

    def by_source(self) -> dict[str, dict[str, float]]:
        """Per source: rounds it proposed in, tokens (tree nodes) proposed and accepted, acceptance rate."""
        out = {}
        for name, (rounds, proposed, accepted) in self.nodes_by_source.items():
            out[name] = {
                "rounds": rounds,
                "proposed": proposed,
                "accepted": accepted,
                "acceptance_rate": accepted / proposed if proposed else 0.0,
            }
        return out

    @property
    def mean_tree_size(self) -> float:
        """Mean number of candidates verified per round (the tree's nodes, its root aside)."""
        return self.drafted / self.rounds if self.rounds else 0.0

    @property
    def rounds(self) -> int:
        return len(self.drafted_per_round)

    @property
    def drafted(self) -> int:
        return sum(self.drafted_per_round)

    @property
    def accepted(self) -> int:
        return sum(self.accepted_per_round)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        """Mean number of draft tokens accepted per verification round."""
        return self.accepted / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted": self.mean_accepted,
            "draft_rounds": self.rounds_from("draft"),
            "lookup_rounds": self.rounds_from("lookup"),
            "mean_tree_size": self.mean_tree_size,
            "by_source": self.by_source(),
        }

    def __str__(self) -> str:
        text = (
            f"{self.rounds} rounds, {self.accepted}/{self.drafted} drafted tokens accepted "
            f"({self.acceptance_rate:.1%}), {self.mean_accepted:.2f} accepted per round"
        )
        sources = sorted(self.by_source().items(), key=lambda kv: -kv[1]["accepted"])
        if sources:
            text += "; accepted/proposed by source: " + ", ".join(
                f"{name} {int(row['accepted'])}/{int(row['proposed'])}" for name, row in sources
            )
        return text
