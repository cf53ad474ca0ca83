"""RL: GRPO with dual-noise verification, in imagination (RAW-Dream) or in the simulator (online baseline)."""
