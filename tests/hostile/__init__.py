"""Hostile inputs: crafted data set files, checkpoints, URLs, numbers and outputs. Each refusal is one line."""
