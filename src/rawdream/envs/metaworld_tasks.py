"""The 50 Meta-World v3 tasks: names, instructions and the named split - Meta-World's task catalogue.

Each task has one canonical instruction (what the policy is told) and paraphrases (used to make learned
judges read the meaning rather than memorise one string). Names are given without Meta-World's ``-v3``
suffix; :func:`rawdream.envs.canonical_task` accepts either form.
"""

from __future__ import annotations

from rawdream.envs.tasks import TaskCatalogue, UnknownTaskError, register_catalogue

# name -> (canonical instruction, paraphrases...)
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly": (
        "put the ring onto the peg",
        "slide the round nut over the peg",
        "place the ring on the peg",
    ),
    "basketball": (
        "dunk the ball into the basket",
        "put the ball through the hoop",
        "score the ball in the basket",
    ),
    "bin-picking": (
        "move the cube into the other bin",
        "pick the block and drop it in the second bin",
        "transfer the cube between the bins",
    ),
    "box-close": ("put the lid on the box", "close the box with its lid", "cover the box"),
    "button-press-topdown": (
        "press the button from the top",
        "push the button down from above",
        "press down on the button",
    ),
    "button-press-topdown-wall": (
        "press the button from the top behind the wall",
        "reach over the wall and push the button down",
        "press down on the button behind the wall",
    ),
    "button-press": ("press the button from the front", "push the button in", "press the button"),
    "button-press-wall": (
        "press the button behind the wall",
        "reach past the wall and push the button in",
        "press the button beside the wall",
    ),
    "coffee-button": (
        "press the coffee machine button",
        "push the button on the coffee machine",
        "start the coffee machine",
    ),
    "coffee-pull": (
        "pull the mug away from the coffee machine",
        "take the cup out from under the coffee machine",
        "slide the mug back from the machine",
    ),
    "coffee-push": (
        "push the mug under the coffee machine",
        "slide the cup under the coffee machine",
        "put the mug beneath the coffee spout",
    ),
    "dial-turn": ("turn the dial", "rotate the dial", "twist the knob"),
    "disassemble": ("take the ring off the peg", "lift the nut off the peg", "remove the ring from the peg"),
    "door-close": ("close the door", "shut the door", "swing the door closed"),
    "door-lock": ("lock the door", "turn the door lock down", "lock the door with the handle"),
    "door-open": ("open the door", "swing the door open", "pull the door open"),
    "door-unlock": ("unlock the door", "turn the door lock up", "unlock the door handle"),
    "drawer-close": ("close the drawer", "push the drawer shut", "slide the drawer closed"),
    "drawer-open": ("open the drawer", "pull the drawer out", "slide the drawer open"),
    "faucet-close": ("turn the faucet off", "rotate the faucet handle closed", "close the tap"),
    "faucet-open": ("turn the faucet on", "rotate the faucet handle open", "open the tap"),
    "hammer": (
        "hammer the nail into the wall",
        "drive the nail in with the hammer",
        "use the hammer on the nail",
    ),
    "hand-insert": (
        "put the puck into the hole",
        "insert the puck in the hole",
        "drop the puck into the hole",
    ),
    "handle-press-side": (
        "press the handle down from the side",
        "push the side handle down",
        "press down the handle on the side",
    ),
    "handle-press": ("press the handle down", "push the handle down", "press down on the handle"),
    "handle-pull-side": (
        "pull the handle up from the side",
        "lift the side handle up",
        "pull up the side handle",
    ),
    "handle-pull": ("pull the handle up", "lift the handle up", "raise the handle"),
    "lever-pull": ("pull the lever up", "raise the lever", "lift the lever"),
    "peg-insert-side": (
        "insert the peg into the hole from the side",
        "push the peg sideways into the hole",
        "put the peg in the side hole",
    ),
    "peg-unplug-side": (
        "unplug the peg from the side",
        "pull the peg out of the hole sideways",
        "remove the peg from the socket",
    ),
    "pick-out-of-hole": (
        "pick the puck out of the hole",
        "lift the puck out of the hole",
        "take the puck out of the hole",
    ),
    "pick-place": (
        "pick up the puck and place it at the goal",
        "move the puck to the red goal",
        "put the puck on the target",
    ),
    "pick-place-wall": (
        "pick up the puck and place it at the goal behind the wall",
        "lift the puck over the wall to the goal",
        "carry the puck past the wall to the target",
    ),
    "plate-slide-back-side": (
        "slide the plate sideways back into the cabinet",
        "push the plate back into the side cabinet",
        "return the plate to the side slot",
    ),
    "plate-slide-back": (
        "slide the plate back into the cabinet",
        "push the plate back into the cabinet",
        "return the plate to the cabinet",
    ),
    "plate-slide-side": (
        "slide the plate sideways into the goal",
        "push the plate sideways to the target",
        "slide the plate to the side goal",
    ),
    "plate-slide": (
        "slide the plate into the goal",
        "push the plate forward to the target",
        "slide the plate into the cabinet",
    ),
    "push-back": (
        "push the puck back to the goal",
        "slide the puck backwards to the target",
        "pull the puck back to the goal",
    ),
    "push": ("push the puck to the goal", "slide the puck to the red target", "move the puck to the goal"),
    "push-wall": (
        "push the puck to the goal behind the wall",
        "slide the puck around the wall to the target",
        "move the puck past the wall to the goal",
    ),
    "reach": ("reach the red goal", "move the gripper to the goal", "touch the target with the gripper"),
    "reach-wall": (
        "reach the goal behind the wall",
        "move the gripper over the wall to the goal",
        "reach past the wall to the target",
    ),
    "shelf-place": (
        "place the block on the shelf",
        "put the cube onto the shelf",
        "set the block on the shelf",
    ),
    "soccer": ("kick the ball into the goal", "push the ball into the net", "score the ball in the goal"),
    "stick-pull": (
        "pull the container with the stick",
        "use the stick to drag the container",
        "grab the stick and pull the container",
    ),
    "stick-push": (
        "push the container with the stick",
        "use the stick to push the container",
        "grab the stick and push the container",
    ),
    "sweep-into": (
        "sweep the puck into the hole",
        "brush the puck into the hole",
        "push the puck into the hole",
    ),
    "sweep": ("sweep the puck off the table", "brush the puck off the edge", "push the puck off the table"),
    "window-close": ("close the window", "slide the window shut", "push the window closed"),
    "window-open": ("open the window", "slide the window open", "push the window open"),
}

ALL_TASKS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))
assert len(ALL_TASKS) == 50


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    return key[:-3] if key.endswith("-v3") else key


CATALOGUE = register_catalogue("metaworld")(
    TaskCatalogue(
        backend="metaworld",
        title="Meta-World v3",
        instructions=INSTRUCTIONS,
        splits={
            # Meta-World's ML10 test tasks: the analogue of LIBERO's held-out suites
            "metaworld-heldout5": ("drawer-open", "door-close", "shelf-place", "sweep-into", "lever-pull"),
            # a second split, to check that recipes developed on the first hold beyond its five targets: drawn
            # once from the first split's 45 pretraining tasks (sorted names, numpy default_rng(14).choice(45,
            # 5, replace=False)) and never tuned on
            "metaworld-heldout5-b": (
                "box-close",
                "button-press-topdown-wall",
                "door-unlock",
                "pick-place",
                "push",
            ),
        },
        normalise=_normalise,
        object_state=((4, 7), (11, 14)),  # the first and the second object (Meta-World's 39-dim observation)
        proprio_names=("hand_x", "hand_y", "hand_z", "gripper"),
        action_names=("dx", "dy", "dz", "gripper"),  # xyz in 1 cm units, gripper effort (+1 closes)
        robot="sawyer",
        state_dim=39,
        fps=80.0,  # frame_skip 5 x timestep 0.0025 s
        workspace=((-0.3, 0.4, 0.05), (0.3, 0.9, 0.3)),  # the hand's reach above the table (world metres)
        scene_families=(
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
        ),
        probe_tasks=("drawer-close", "door-open", "window-open", "button-press", "push"),
        experts=True,
    )
)


def metaworld_env_name(task: str) -> str:
    key = CATALOGUE.find(task)
    if key is None:
        raise UnknownTaskError(f"{task!r} is not a Meta-World task; run `rawdream tasks` to list them")
    return key + "-v3"
