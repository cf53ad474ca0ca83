"""The VLA policy: image + instruction + proprioception -> a chunk of 8 actions as categorical tokens."""
