"""L1RR sparse training: reweighted, dynamic, self-adaptive L1 on BN scales + feature attention loss,
and the ratio solver that turns a sparse model into per-layer kept channels (`ratios.json`)."""
