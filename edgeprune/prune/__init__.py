"""Pruning engine: channel dependency graph (torch.fx), residual reconstruction, physical pruning, pruned-model I/O."""
