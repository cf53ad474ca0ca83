"""``hf`` judge: a local Hugging Face VLM (the Qwen2-VL / Qwen2.5-VL / Qwen3-VL families) loaded from a directory.

No hub access at run time (``local_files_only``). One forward pass per batch: the score is
P("Yes") / (P("Yes") + P("No")) of the next token after the prompt, thresholded into a verdict. The inputs are
built from the checkpoint's tokenizer (with its chat template) and image processor, expanding each image
placeholder into ``grid_t * grid_h * grid_w / merge_size**2`` tokens as these models' processors do - so it
also works where the full ``AutoProcessor`` cannot be built (its video processor needs torchvision).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rawdream.reward.base import JudgeConfig, Verdict, register_judge
from rawdream.reward.openai import (
    AFFIRMATIVE,
    PROMPT,
    PROMPT_QUESTION,
    PROMPT_STATEMENT,
    PROMPT_VIDEO,
    check_scoring,
)

IMAGE_TOKEN = "<|image_pad|>"


@dataclass
class HFJudgeConfig(JudgeConfig):
    path: str = ""  # a local model directory (config.json, weights, tokenizer, image processor)
    scoring: str = "yes_no"  # rawdream.reward.openai.SCORINGS

    def validate(self) -> None:
        check_scoring(self.scoring)


class HFJudge:
    name = "hf"
    privileged = False

    def __init__(self, cfg: HFJudgeConfig, batch_size: int = 4):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        path = Path(cfg.path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"--judge.path {path!s} is not a local Hugging Face model directory "
                f"(config.json missing); download the VLM there first, e.g. with huggingface-cli"
            )
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        self.merge = int(getattr(self.image_processor, "merge_size", 2))
        self.yes_ids = self._ids(["Yes", "yes", " Yes"])
        self.no_ids = self._ids(["No", "no", " No"])
        self.true_ids = self._ids([AFFIRMATIVE, " " + AFFIRMATIVE])
        if cfg.scoring == "top" and not self.true_ids:
            raise ValueError(
                f"the tokenizer of {path} has no single-token {AFFIRMATIVE!r}; use --judge.scoring=yes_no"
            )
        if cfg.scoring == "yes_no" and (not self.yes_ids or not self.no_ids):
            raise ValueError(f"the tokenizer of {path} has no single-token 'Yes'/'No'; cannot score verdicts")
        self.tokenizer.padding_side = "left"  # the next-token logits sit at the last position of every row

    def _ids(self, words: list[str]) -> list[int]:
        out = set()
        unk = self.tokenizer.unk_token_id
        for w in words:
            ids = self.tokenizer.encode(w, add_special_tokens=False)
            if len(ids) == 1 and ids[0] != unk:
                out.add(ids[0])
        return sorted(out)

    def _prompt(self, instruction: str, n_images: int, grids: torch.Tensor) -> str:
        # the same order as the served judge: the instruction, the frames, the question last
        content = [{"type": "text", "text": PROMPT.format(instruction=instruction) + "\n" + PROMPT_VIDEO}]
        content += [{"type": "image"}] * n_images
        last = (
            PROMPT_STATEMENT.format(instruction=instruction) if self.cfg.scoring == "top" else PROMPT_QUESTION
        )
        content += [{"type": "text", "text": last}]
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        for grid in grids:  # expand each placeholder to the number of merged vision patches it stands for
            n = int(grid.prod()) // self.merge**2
            text = text.replace(IMAGE_TOKEN, "<|placeholder|>" * n, 1)
        return text.replace("<|placeholder|>", IMAGE_TOKEN)

    @torch.no_grad()
    def __call__(self, videos, instructions, **_: Any) -> list[Verdict]:
        from PIL import Image

        if len(videos) != len(instructions):
            raise ValueError(f"{len(videos)} videos but {len(instructions)} instructions")
        out: list[Verdict] = []
        for k in range(0, len(videos), self.batch_size):
            t0 = time.perf_counter()
            texts, images, grids = [], [], []
            for video, instr in zip(videos[k : k + self.batch_size], instructions[k : k + self.batch_size]):
                frames = [Image.fromarray(f) for f in self.cfg.frames.select(video)]
                proc = self.image_processor(images=frames, return_tensors="pt")
                texts.append(self._prompt(instr, len(frames), proc["image_grid_thw"]))
                images.append(proc["pixel_values"])
                grids.append(proc["image_grid_thw"])
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
            mm_types = (enc["input_ids"] == image_id).long()  # 1 = image token (M-RoPE positions), 0 = text
            inputs = {
                **enc,
                "pixel_values": torch.cat(images),
                "image_grid_thw": torch.cat(grids),
                "mm_token_type_ids": mm_types,
            }
            inputs = {key: v.to(self.device) for key, v in inputs.items()}
            logits = self.model(**inputs).logits[:, -1].float()
            p = torch.softmax(logits, dim=-1)
            if self.cfg.scoring == "top":  # the affirmative's own probability: TOPReward's log-likelihood
                score = p[:, self.true_ids].sum(-1).cpu().numpy()
                shown = [f"log P(True)={np.log(max(s, 1e-30)):.3f}" for s in score]
            else:
                p_yes, p_no = p[:, self.yes_ids].sum(-1), p[:, self.no_ids].sum(-1)
                score = (p_yes / (p_yes + p_no).clamp_min(1e-12)).cpu().numpy()
                shown = [f"P(yes)={s:.3f}" for s in score]
            dt = (time.perf_counter() - t0) / len(texts)
            out += [
                Verdict(success=bool(s >= self.cfg.threshold), score=float(s), raw=r, latency=dt)
                for s, r in zip(np.asarray(score), shown)
            ]
        return out


@register_judge("hf", config=HFJudgeConfig)
def _make(cfg: HFJudgeConfig) -> HFJudge:
    return HFJudge(cfg)
