"""What the model is asked: LRE relations, the prompt table, your own items, sentence-level items."""
