"""The hf judge on tiny randomly initialised Qwen2-VL and Qwen3-VL models built from configs (no download), and the
oracle."""

import warnings

import numpy as np
import pytest

from rawdream.reward.base import OracleNotAllowedError, judge_config, make_judge


def _tiny_config(family: str, vocab: dict[str, int]):
    """A 2-layer random VLM of ``family``'s architecture, small enough to build and run on the CPU in seconds."""
    ids = {
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
    }
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    if family == "qwen2-vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        cfg = Qwen2VLConfig(
            text_config={**text, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
            vision_config={
                "depth": 1,
                "embed_dim": 32,
                "hidden_size": 32,
                "num_heads": 2,
                "mlp_ratio": 2,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "in_chans": 3,
            },
            eos_token_id=vocab["<|im_end|>"],
            **ids,
        )
        return Qwen2VLForConditionalGeneration(cfg), 14
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    # Qwen3-VL: 16-pixel patches, interleaved M-RoPE, DeepStack features injected into the first text layers
    cfg = Qwen3VLConfig(
        text_config={
            **text,
            "head_dim": 16,
            "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        vision_end_token_id=vocab["<|vision_end|>"],
        **ids,
    )
    return Qwen3VLForConditionalGeneration(cfg), 16


@pytest.fixture(scope="module", params=["qwen2-vl", "qwen3-vl"])
def tiny_vlm(request, tmp_path_factory):
    warnings.filterwarnings("ignore")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = tmp_path_factory.mktemp(request.param)
    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    words = ["Yes", "No", "yes", "no", "True", "False", "A", "robot", "arm", "open", "the", "drawer", "user"]
    words += ["assistant"]
    vocab = {t: i for i, t in enumerate([*special, *words, "[UNK]"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special,
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type']=='image' %}"
        "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    model, patch = _tiny_config(request.param, vocab)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    side = 64 if patch == 16 else 56  # whole merged patches
    Qwen2VLImageProcessorPil(
        min_pixels=side * side, max_pixels=64 * 64, patch_size=patch, merge_size=2
    ).save_pretrained(path)
    return path


def test_hf_backend_scores_a_batch_from_a_local_directory(tiny_vlm):
    judge = make_judge(judge_config("hf", path=str(tiny_vlm)))
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (9, 64, 64, 3), dtype=np.uint8) for _ in range(5)]
    out = judge(videos, ["open the drawer"] * 5)
    assert len(out) == 5 and all(v.success == (v.score >= 0.5) for v in out)  # the score decides, at 0.5
    again = judge(videos[:1], ["open the drawer"])  # batching does not change a verdict
    assert again[0].score == pytest.approx(out[0].score, abs=1e-4)


def test_hf_backend_top_scoring_is_the_affirmative_probability(tiny_vlm):
    """TOPReward-style scoring on the same model: P("True") after the statement, thresholded; batched the same."""
    import torch

    judge = make_judge(judge_config("hf", path=str(tiny_vlm), scoring="top", threshold=0.01))
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 255, (9, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    out = judge(videos, ["open the drawer"] * 3)
    assert all(0 < v.score < 1 and v.success == (v.score >= 0.01) and "log P(True)" in v.raw for v in out)
    assert judge(videos[:1], ["open the drawer"])[0].score == pytest.approx(out[0].score, rel=1e-3)
    # a random 20-token model spreads its mass: the affirmative alone is far from the Yes/No-renormalised score
    yes_no = make_judge(judge_config("hf", path=str(tiny_vlm)))(videos[:1], ["open the drawer"])[0]
    assert out[0].score < 0.5 and yes_no.score > 0.2
    assert torch.isfinite(torch.tensor([v.score for v in out])).all()


def test_hf_backend_refuses_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model directory"):
        make_judge(judge_config("hf", path=str(tmp_path)))


def test_oracle_refused_for_training_unless_named_and_replays_success():
    with pytest.raises(OracleNotAllowedError, match="allow_oracle"):
        make_judge(judge_config("oracle"), purpose="training")
    judge = make_judge(judge_config("oracle", allow_oracle=True), purpose="training")
    assert judge.privileged
    from rawdream.envs import make_env

    env = make_env("reach")
    env.reset(3)
    expert = []
    for _ in range(64):
        a = env.expert_action()
        expert.append(a)
        env.step(a, render=False)
    env.close()
    good = np.stack(expert).reshape(1, 8, 8, 4)
    idle = np.zeros((1, 8, 8, 4), np.float32)
    out = judge(
        [None, None],
        ["reach the red goal"] * 2,
        tasks=["reach", "reach"],
        seeds=[3, 3],
        actions=np.concatenate([good, idle]),
    )
    assert [v.success for v in out] == [True, False]
