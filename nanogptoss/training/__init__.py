"""Training and experiments: the trainer (train), GPT-OSS against GPT-2 (compare), sampling
from a checkpoint (sample), the LLM judge (judge), and the device and precision choice (device)."""
