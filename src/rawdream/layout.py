"""Where a run directory keeps what: written by the pipeline (``rawdream run``), read by the report, the summary
and anyone resuming or comparing runs. Stage folders are named relative to the run's root (they are also the
stage names the pipeline's resume bookkeeping uses); ``layout / layout.WM`` is the folder itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class RunLayout:
    root: Path

    # datasets (LeRobot v3 layout)
    TARGET_DEMOS: ClassVar[str] = "data/target_demos"  # the one demonstration per target task
    PLAY: ClassVar[str] = "data/play"  # task-free play: the world model's data
    DEMOS: ClassVar[str] = (
        "data/demos"  # pretraining-task demos: the base policy's data, the judge's references
    )
    LABELED: ClassVar[str] = "data/labeled"  # labelled pretraining-task videos: the judge's data
    POLICY_ROLLOUTS: ClassVar[str] = "data/policy_rollouts"  # the base policy's own rollouts, for the judge
    # the base policy acting inside the world model on pretraining tasks (closed-loop imagination, labelled by a
    # simulator replay of its actions), for the judge
    IMAGINED_ROLLOUTS: ClassVar[str] = "data/imagined_rollouts"
    # models
    POLICY_BASE: ClassVar[str] = "policy_base"
    POLICY_SFT: ClassVar[str] = "policy_sft"
    WM: ClassVar[str] = "wm"  # the world model every later stage uses
    WM_PRETRAIN: ClassVar[str] = (
        "wm_pretrain"  # its pre-training, when the run fine-tunes it on (wm_finetune)
    )
    JUDGE: ClassVar[str] = "judge"
    JUDGE_BLIND: ClassVar[str] = "judge_blind"  # the task-blind control: neither instruction nor reference
    # more judges of the same recipe, other training seeds (judge_candidates > 1), and the RL check that picks
    # the one the run's RL uses (experiment/judge_check.py): judge_check/judge_check.json names it
    JUDGE_CANDIDATES: ClassVar[str] = "judge_candidates"
    JUDGE_CHECK: ClassVar[str] = "judge_check"
    # measurements
    EVAL_WM: ClassVar[str] = "eval/wm"
    EVAL_JUDGE: ClassVar[str] = "eval/judge"
    EVAL_BASE: ClassVar[str] = "eval/base"
    # the two evaluation protocols, never mixed (seeds.LAYOUTS): their folders' suffixes
    PROTOCOL_SUFFIX: ClassVar[dict[str, str]] = {"practised": "_practised", "new": ""}

    def __truediv__(self, rel: str) -> Path:
        return Path(self.root) / rel

    @classmethod
    def eval_sft(cls, protocol: str) -> str:
        return f"eval/sft{cls.PROTOCOL_SUFFIX[protocol]}"

    @staticmethod
    def dream(task: str) -> str:
        return f"dream/{task}"

    @classmethod
    def eval_dream(cls, task: str, protocol: str) -> str:
        return f"eval/dream_{task}{cls.PROTOCOL_SUFFIX[protocol]}"

    # files
    @property
    def summary(self) -> Path:
        return self / "summary.json"

    @property
    def report(self) -> Path:
        return self / "report.html"

    @property
    def world_model_info(self) -> Path:
        return self / f"{self.WM}/world_model.json"

    @property
    def judge_info(self) -> Path:
        return self / f"{self.JUDGE}/judge.json"

    def policy_info(self, which: str) -> Path:
        return self / f"{which}/policy.json"
