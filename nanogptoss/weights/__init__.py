"""Weight formats: Hugging Face gpt-oss checkpoints (hf), unquantized or with MXFP4 experts as
published (mxfp4), and training checkpoints (checkpoint)."""
