"""Evaluation against the real simulator: policy success, world-model fidelity, judge accuracy."""
