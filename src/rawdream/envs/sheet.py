"""Contact sheet: the first frame of every task at the default camera and resolution, in one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdream.envs.base import EnvConfig, make_env
from rawdream.envs.tasks import catalogue, tasks_of


def contact_sheet(
    path: str | Path,
    cfg: EnvConfig | None = None,
    seed: int = 0,
    scale: int = 2,
    highlight: tuple[str, ...] = (),
    tasks: tuple[str, ...] = (),
    cols: int = 10,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or EnvConfig()
    tasks = tasks or tasks_of(cfg.backend)  # every task of the simulator
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9 * scale, rows * 1.0 * scale), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks):
        env = make_env(task, cfg)
        obs, _ = env.reset(seed)
        env.close()
        ax.imshow(np.asarray(obs["image"]), interpolation="nearest")
        ax.set_title(task, fontsize=5 * scale, color="crimson" if task in highlight else "black")
    fig.suptitle(
        f"{catalogue(cfg.backend).title or cfg.backend}, {cfg.image_size}x{cfg.image_size}, seed {seed} "
        f"(held-out targets in red)",
        fontsize=6 * scale,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def object_visibility(
    cfg: EnvConfig | None = None, seeds: tuple[int, ...] = (0, 1, 2), tasks: tuple[str, ...] = ()
) -> dict[str, dict]:
    """Per task, measured with MuJoCo segmentation at reset: pixels of all task objects, and the smallest object
    body (the one a pixel-only policy is most likely to miss), as medians over ``seeds``."""
    cfg = cfg or EnvConfig()
    tasks = tasks or tasks_of(cfg.backend)
    out = {}
    for task in tasks:
        env = make_env(task, cfg)
        totals, smallest, names = [], [], []
        for seed in seeds:
            env.reset(seed)
            px = env.object_pixels()
            visible = {k: v for k, v in px.items() if v > 0}
            totals.append(sum(px.values()))
            name = min(visible, key=visible.get) if visible else "-"
            smallest.append(visible.get(name, 0))
            names.append(name)
        env.close()
        out[task] = {
            "object_px": int(np.median(totals)),
            "smallest_px": int(np.median(smallest)),
            "smallest_body": max(set(names), key=names.count),
        }
    return out


def task_table(split) -> str:
    """Every task of the split's simulator with its role and instruction."""
    from rawdream.envs.tasks import instruction, tasks_of

    lines = [
        f"split {split.name} ({split.backend}): {len(split.targets)} targets, {len(split.pretrain)} pretraining "
        f"tasks\n"
    ]
    # the split's tasks; a simulator's other tasks (LIBERO's other suites) are in no role and not listed
    tasks = [t for t in tasks_of(split.backend) if t in split.targets or t in split.pretrain]
    width = max(28, *(len(t) for t in tasks))
    for t in tasks:
        role = "target" if t in split.targets else "pretrain"
        lines.append(f"{t:{width}s} {role:9s} {instruction(t)}")
    return "\n".join(lines)


def visibility_table(vis: dict[str, dict], image_size: int) -> str:
    """``object_visibility``'s numbers as the table `rawdream tasks --measure` prints."""
    lines = [f"object pixels at {image_size}x{image_size} (median of 3 resets):"]
    lines.append(f"{'task':28s} {'objects':>8s} {'smallest':>9s}  smallest body")
    lines += [
        f"{t:28s} {m['object_px']:8d} {m['smallest_px']:9d}  {m['smallest_body']}" for t, m in vis.items()
    ]
    small = sorted(m["smallest_px"] for m in vis.values())
    lines.append(
        f"smallest object over all tasks: {small[0]} px; median task's smallest object: {small[len(small) // 2]} px"
    )
    return "\n".join(lines)
