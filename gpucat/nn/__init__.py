"""The network: its math written once against a device (network.py, in the order of the
README's equations), the optimizers (optim.py), and the network applied to data: the
probability of "cat", scores, the dead-layer check (inference.py)."""
