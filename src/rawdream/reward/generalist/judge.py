"""The generalist judge as a ``Judge`` backend (``--judge.backend generalist``): a trained directory, frozen."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rawdream.config import build
from rawdream.io import load_model
from rawdream.policy.text import TextEncoder
from rawdream.reward.base import JudgeConfig, Verdict, register_judge
from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet, text_features
from rawdream.reward.references import References


@dataclass
class GeneralistJudgeConfig(JudgeConfig):
    path: str = ""  # the directory `rawdream train-judge` wrote
    # demos dataset: a reference-conditioned judge sees each instruction beside a demo of its task
    reference: str = ""


class GeneralistJudge:
    name = "generalist"
    privileged = False

    def __init__(self, cfg: GeneralistJudgeConfig):
        path, meta, sd = load_model(
            cfg.path, "judge", "train one with `rawdream train-judge` and pass --judge.path DIR"
        )
        self.cfg = cfg
        self.model = JudgeNet(build(GeneralistConfig, meta["config"]))
        self.model.load_state_dict(sd)
        self.model.eval()
        self.temperature = float(meta.get("temperature", 1.0))
        self.text = TextEncoder(meta.get("text_cache"))
        self.info = meta
        self.stats = {"abstains": 0}
        self.references = None
        if self.model.cfg.reference:
            if not cfg.reference:
                raise ValueError(
                    f"the judge at {path} compares videos with a demonstration of the instructed task: pass "
                    f"--judge.reference DEMOS_DIR (e.g. the target task's 1-shot demo dataset)"
                )
            self.references = References.from_dataset(cfg.reference)

    @torch.no_grad()
    def scores(self, videos, instructions) -> np.ndarray:
        sel = self.model.cfg.frames
        dev = next(self.model.parameters()).device  # inputs follow the model (``judge.model.to("cuda")``)
        out = []
        for k in range(0, len(videos), 128):
            clips = torch.from_numpy(np.stack([sel.select(v) for v in videos[k : k + 128]])).to(dev)
            texts = list(instructions[k : k + 128])
            ref = None
            if self.references is not None:
                ref = torch.from_numpy(self.references.for_instructions(texts)).to(dev)
            logits = self.model(clips, text_features(self.text, texts).to(dev), ref)
            out.append(torch.sigmoid(logits.float().cpu() / self.temperature).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        t0 = time.perf_counter()
        p = self.scores(videos, instructions)
        dt = (time.perf_counter() - t0) / max(len(p), 1)
        return [
            Verdict(success=bool(s >= self.cfg.threshold), score=float(s), raw=f"p={s:.3f}", latency=dt)
            for s in p
        ]


@register_judge("generalist", config=GeneralistJudgeConfig)
def _make(cfg: GeneralistJudgeConfig) -> GeneralistJudge:
    return GeneralistJudge(cfg)
