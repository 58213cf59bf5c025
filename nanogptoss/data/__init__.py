"""Text in, tokens out: tokenizers (tokenizer), stories and token batches (stories), and the
synthetic stories whose entropy is known exactly (synthetic)."""
