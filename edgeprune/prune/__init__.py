"""Pruning: dependency groups, importance criteria, and plans that rebuild a pruned model."""
