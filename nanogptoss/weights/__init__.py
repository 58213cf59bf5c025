"""Weight formats: Hugging Face gpt-oss checkpoints (hf) and training checkpoints (checkpoint)."""
