"""Reward judges: served VLMs (openai), local VLMs (hf), the embedded generalist judge, the simulator oracle."""
