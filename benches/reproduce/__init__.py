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
6. The task-targeted probe (`nncift.probe`): a mixed pool of 2,000 ShareGPT / chatterbot /
   IFBench items, 40 chatterbot targets and 300 held-out chatterbot test items (de-duplicated
   by normalised prompt, checked in code); rows random, length, embedding FL, embedding FLMI,
   RDS+ at 10% of the pool, random and embedding FLMI also at 5% and 20%, full data (one
   seed); SmolLM2 LoRA fine-tuned on each subset (three seeds), judged by the NLL of the test
   responses (and ROUGE-L on 40 of them) with paired bootstrap intervals; the power check.
   Measured on one torch thread (load ~4 on 2 cores): ~3.7 core-hours for the rows plus ~1
   for full data. Each fine-tune is cached and locked: run `--probe-only` in a second process
   beside the full run (or two of them, one per core) and they share the fine-tunes, so the
   probe takes about half that wall time; `--probe-timing` re-measures one fine-tune and
   projects the whole probe.

The exact chatterbot values (the expensive part: 140 x 70 DELIFT pairs took 38 min on one
core of a 2-core CPU, while LESS and SelectIT ran on the other) are kept in
benches/data/chatterbot_labels_140x70.npz and reused when their inputs' hash matches. To
compute them on both cores, run `--labels-only delift` and `--labels-only less,selectit`
side by side first; the full run then reuses their tiles.

Intermediate results are cached under `--cache` (default .nncift-cache/repro): a rerun only
recomputes what changed, and the DELIFT labels are resumable tiles. The report's numbers
are never typed by hand: the markdown is rendered from the results dictionary.
"""
