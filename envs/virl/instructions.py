"""Route directions: one numbered list per route, two sentences per milestone (spec-virl.md).

    1. First, turn slightly left to face northeast.
    2. Move forward until you reach the next intersection where Chase Bank is on your front right.
    3. Turn right to face southeast.
    4. Move forward until you reach the destination where Starbucks is on your front left.

Every sentence names both the relative and the absolute direction, in every variant; only the
action space and the expected turn action depend on the variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.virl.geometry import relative_label


@dataclass(frozen=True)
class Leg:
    """One milestone's directions: a turn, then a walk to the next milestone.

    Turn from `from_heading` to face `to_label` (`to_heading` degrees), then walk to the next
    milestone, where `landmark` (a sentence such as "Chase Bank is on your right", or None) is
    seen; the last leg ends at the destination.
    """

    from_heading: float
    to_heading: float
    to_label: str
    landmark: str | None
    to_destination: bool

    @property
    def relative(self) -> str:
        """The turn's name: "left", "right", "slightly left" or "slightly right" (wrapped heading change)."""
        return relative_label(self.from_heading, self.to_heading)

    def turn_sentence(self, first: bool) -> str:
        """The turn sentence: "First, turn left to face south." or "Turn left to face south."."""
        return f"{'First, turn' if first else 'Turn'} {self.relative} to face {self.to_label}."

    def move_sentence(self) -> str:
        """The move sentence: "Move forward until you reach the next intersection (where ...)." or the destination."""
        target = "the destination" if self.to_destination else "the next intersection"
        where = f" where {self.landmark}" if self.landmark else ""
        return f"Move forward until you reach {target}{where}."


def build_instructions(legs: list[Leg]) -> tuple[str, ...]:
    """The sentences in order (2 per leg); numbering is added by `numbered`."""
    sentences: list[str] = []
    for i, leg in enumerate(legs):
        sentences += [leg.turn_sentence(first=i == 0), leg.move_sentence()]
    return tuple(sentences)


def numbered(sentences: tuple[str, ...]) -> str:
    """The sentences numbered one per line ("1. ...", "2. ..."), as shown in the prompt."""
    return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, start=1))


def absolute_turn(label: str) -> str:
    """The absolute turn action, e.g. "turn_direction(northeast)"."""
    return f"turn_direction({label})"


def relative_turn(leg: Leg) -> str:
    """The relative turn action of the rule_ood variant, e.g. "turn_direction(slightly left)"."""
    return f"turn_direction({leg.relative})"
