"""Scene families of Meta-World tasks, for counterfactual same-scene labels.

Tasks in one family share a scene (the same object: a window, a faucet, a door, ...) but not a goal. A video of
task T is labelled under each sibling's instruction too: a sibling's instruction is *not* accomplished in T's
video (in T's scene the object starts where the sibling would take it - a window-close scene starts with the
window open - or the sibling's goal is not in the scene). So the same video carries different labels under
different instructions, and a judge must read the instruction to score it.

Only pretraining tasks take part: the held-out targets' instructions and success checks never label
training data (``families(split)`` drops them).
"""

from __future__ import annotations

from rawdream.splits import Split

FAMILIES: tuple[tuple[str, ...], ...] = (
    ("window-open", "window-close"),
    ("faucet-open", "faucet-close"),
    ("door-open", "door-close", "door-lock", "door-unlock"),
    ("drawer-open", "drawer-close"),
    ("handle-press", "handle-pull"),
    ("handle-press-side", "handle-pull-side"),
    ("push", "push-back", "push-wall"),
    ("plate-slide", "plate-slide-back", "plate-slide-side", "plate-slide-back-side"),
    ("coffee-push", "coffee-pull", "coffee-button"),
    ("button-press", "button-press-topdown", "button-press-wall", "button-press-topdown-wall"),
    ("hand-insert", "pick-out-of-hole", "sweep", "sweep-into"),
    ("peg-insert-side", "peg-unplug-side"),
    ("assembly", "disassemble"),
    ("reach", "reach-wall", "pick-place", "pick-place-wall"),
    ("stick-pull", "stick-push"),
    ("basketball", "soccer"),
    ("bin-picking", "box-close", "shelf-place"),
    ("lever-pull", "dial-turn"),
)


def siblings(task: str, split: Split) -> list[str]:
    """Pretraining tasks sharing ``task``'s scene family (never a target of ``split``)."""
    for fam in FAMILIES:
        if task in fam:
            return [t for t in fam if t != task and t in split.pretrain]
    return []
