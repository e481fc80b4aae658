"""The model: where it comes from, loading, tokens, the hook vocabulary, batched scoring, multi-mask passes."""
