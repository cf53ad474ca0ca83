"""``generalist`` judge: the embedded default - a small video-language success classifier trained by rawdream on
labeled rollouts of *pretraining tasks only*, then frozen (the role of a general-purpose robot reward model).

Model: each selected frame is stacked with its change since the first frame (so change is visible to the first
convolution) and - by default - with the last frame of a reference demonstration of the instructed task and that
demo's own change (:mod:`rawdream.reward.references`: a new task brings one demo, and the judge sees it); a CNN
with FiLM from the instruction encodes each frame; features are pooled over time and fused with the instruction;
a temperature fitted on held-out pretraining episodes calibrates the probability. ``--model.reference=false``
gives the instruction-only judge of the paper's setting, which on this benchmark does not transfer to held-out
tasks (see the README).

Instruction pathway: the frozen MiniLM embedding of the sentence *and* of its verb (first word) - MiniLM puts
"open the drawer" and "close the drawer" at cosine 0.90, the verbs alone far apart - through a trained adapter.

Training data (see :func:`judge_examples`): every pretraining rollout under its own instruction (paraphrases
sampled) with the simulator's success label ("reached at any step": the same semantics as policy evaluation and
RL), under its scene siblings' instructions (label 0, :mod:`rawdream.reward.siblings`), and under a random other
task's instruction (label 0); optionally the world model's imagined replay of the same actions with the real
replay's label, so the judge is not fooled by the world model's look. In training, the reference is a random
successful demo of the instructed task (another seed's layout); sibling and other-task rows get their own task's
demo, so "the video does not end like this demo" is learned as well. ``--blind`` trains the task-blind control
(instruction and reference replaced by constants), which must do clearly worse.
"""

from rawdream.reward.generalist.data import (
    Examples,
    Videos,
    imagine_videos,
    judge_examples,
    labeled_videos,
    stratified_holdout,
)
from rawdream.reward.generalist.judge import GeneralistJudge
from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet, text_features, verb_of
from rawdream.reward.generalist.train import TrainJudgeConfig, fit_temperature, save_generalist, train_judge

__all__ = [
    "Examples",
    "GeneralistConfig",
    "GeneralistJudge",
    "JudgeNet",
    "TrainJudgeConfig",
    "Videos",
    "fit_temperature",
    "imagine_videos",
    "judge_examples",
    "labeled_videos",
    "save_generalist",
    "stratified_holdout",
    "text_features",
    "train_judge",
    "verb_of",
]
