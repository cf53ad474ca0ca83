"""Experiments that combine stages: the paper's results table in miniature."""
