"""Regenerate docs/reproduction.md: our measurements of the NN-CIFT paper's claims.

Run:  python -m benches.reproduce            (full run; see the report's header for its wall time)
      python -m benches.reproduce --quick    (smoke run, a few minutes; smaller everything)

(`python benches/reproduce.py` is a shim for the same.) One module per section: config (sizes,
seeds, caches, data), cost, labels (the exact real-LM values), network_error, selection,
downstream, probe (the task-targeted fine-tuning probe), report (rendering), verdicts.

Everything in the report comes from this script, on real offline data, with seeds stated:

1. Cost (paper Table 7): each influence function's per-pair / per-item cost measured on a
   small sample, extrapolated to the full matrix (M = 2,000 pool x N = 500 targets) and to
   NN-CIFT at u = 0.05 (Q1 labels), plus the *measured* network training and Rust
   prediction, plus the input embeddings every NN-CIFT run needs.
2. Network error by quadrant and by u (Fig. 2 / Table 2): DELIFT (SE) on the full 2,000 x
   500 cosine matrix, the paper's network and the `auto` variant against the constant,
   additive and cosine baselines; and DELIFT on a real SmolLM2 matrix over short
   chatterbot items (the largest pool whose full matrix fits the time budget).
3. Selection quality: facility location and FLMI on NN-CIFT's predicted kernels vs the
   exact kernels, judged by the exact objective; random and embedding top-k baselines.
4. Selection agreement on real SmolLM2 values (chatterbot): DELIFT, LESS, SelectIT and
   DELIFT (SE) — the subset chosen from NN-CIFT's predictions vs from the true values.
5. Downstream (ICL and LoRA fine-tuning for every row, three seeds) on the same
   chatterbot pool: Initial, Random, embedding top-k, each original function, its NN-CIFT
   version, full data.

The exact chatterbot values (the expensive part: 140 x 70 DELIFT pairs took 38 min on one
core of a 2-core CPU, while LESS and SelectIT ran on the other) are kept in
benches/data/chatterbot_labels_140x70.npz and reused when their inputs' hash matches. To
compute them on both cores, run `--labels-only delift` and `--labels-only less,selectit`
side by side first; the full run then reuses their tiles.

Intermediate results are cached under `--cache` (default .nncift-cache/repro): a rerun only
recomputes what changed, and the DELIFT labels are resumable tiles. The report's numbers
are never typed by hand: the markdown is rendered from the results dictionary.
"""
