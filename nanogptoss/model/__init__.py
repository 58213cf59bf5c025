"""The architecture, one module per chapter idea: norm (RMSNorm), rope (rotary positions,
YaRN), attention (GQA, sliding window, sinks), swiglu (the feed-forward), router, moe
(mixture of experts), transformer (the block and the whole decoder), kv_cache, generate
(sampling), params (parameter and FLOP counts)."""
