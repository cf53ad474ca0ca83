"""Scene families (the task catalogue's ``scene_families``), for counterfactual same-scene labels.

Tasks in one family share a scene (the same object: a window, a faucet, a door, ...) but not a goal. A video of
task T is labelled under each sibling's instruction too: a sibling's instruction is *not* accomplished in T's
video (in T's scene the object starts where the sibling would take it - a window-close scene starts with the
window open - or the sibling's goal is not in the scene). So the same video carries different labels under
different instructions, and a judge must read the instruction to score it.

Only pretraining tasks take part: the held-out targets' instructions and success checks never label
training data (``families(split)`` drops them).
"""

from __future__ import annotations

from rawdream.envs.tasks import catalogue
from rawdream.splits import Split


def siblings(task: str, split: Split) -> list[str]:
    """Pretraining tasks sharing ``task``'s scene family (never a target of ``split``)."""
    for fam in catalogue(split.backend).scene_families:
        if task in fam:
            return [t for t in fam if t != task and t in split.pretrain]
    return []
