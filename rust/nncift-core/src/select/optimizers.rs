//! Greedy maximisers: naive, lazy (priority queue), stochastic and
//! lazier-than-lazy. All break exact ties between equal keys (gain, or gain /
//! cost) by a per-item *tie rank*: the item's position in a permutation of
//! `0..n` drawn from the run's seed ([`tie_ranks`]), lower rank first, so a
//! saturated kernel or equal scores give a seeded sample, not the head of the
//! pool file. Gains are evaluated in batches whose results do not depend on the
//! batch size, so the chosen set is bit-identical for any thread count.
//!
//! Lazy and lazier-than-lazy keep stale gains as upper bounds. A heap entry is
//! ordered by (key desc, tie rank asc); a fresh entry at the top is the exact
//! argmax with the lowest tie rank among ties, so lazy greedy returns exactly
//! what naive greedy returns whenever gains never grow (true bit for bit here:
//! each term is monotone in the memoised state and sums run in a fixed order).
//!
//! Top-k (the modular function) never stops on the gain rules: a score of 0
//! or below is still a value to rank by, so only the budget (count or cost)
//! ends it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::functions::Problem;
use crate::error::{CoreError, CoreResult};
use crate::order::Ranked;

/// Which greedy variant to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Naive,
    Lazy,
    /// Stochastic greedy (Mirzasoleiman et al. 2015): each step scans a random
    /// sample of `ceil(n / k * ln(1 / epsilon))` remaining candidates.
    Stochastic {
        epsilon: f64,
    },
    /// Stochastic greedy with lazy bounds inside each sample.
    LazierThanLazy {
        epsilon: f64,
    },
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Naive => "naive",
            Optimizer::Lazy => "lazy",
            Optimizer::Stochastic { .. } => "stochastic",
            Optimizer::LazierThanLazy { .. } => "lazier-than-lazy",
        }
    }
}

/// Budget, stopping rules and the starting set of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub optimizer: Optimizer,
    /// Maximum number of items to add (beyond `initial`).
    pub count: usize,
    /// Optional per-item costs (n,), all finite and > 0; with them the greedy
    /// ranks by gain / cost (cost-scaled greedy) and stops when nothing fits.
    pub costs: Option<Vec<f64>>,
    /// Total cost allowed for the added items (required with `costs`).
    pub cost_budget: Option<f64>,
    /// Stop when the best gain is within `zero_tol` of 0 (submodlib: 1e-5).
    pub stop_if_zero_gain: bool,
    /// Stop when the best gain is negative.
    pub stop_if_negative_gain: bool,
    pub zero_tol: f64,
    /// Items already chosen; inserted first, never returned, not charged.
    pub initial: Vec<usize>,
    /// Seed of the stochastic samples and of the tie ranks.
    pub seed: u64,
    /// Per-candidate tie ranks `(n,)`: of two equal keys the lower rank wins
    /// (then the lower index, should ranks repeat). `None`: a permutation of
    /// `0..n` drawn from `seed` ([`tie_ranks`]). GreeDi hands each part the
    /// global ranks of its items so that parts and merge agree with one order.
    pub tie_ranks: Option<Vec<u64>>,
    /// Exempt the first pick from the stop rules (disparity-sum: every single
    /// item has value 0 by definition).
    pub exempt_first: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            optimizer: Optimizer::Lazy,
            count: 1,
            costs: None,
            cost_budget: None,
            stop_if_zero_gain: false,
            stop_if_negative_gain: false,
            zero_tol: 1e-5,
            initial: Vec::new(),
            seed: 0,
            tie_ranks: None,
            exempt_first: false,
        }
    }
}

/// Why a run chose fewer items than its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `stop_if_zero_gain`: the best remaining gain was within `zero_tol` of 0.
    ZeroGain,
    /// `stop_if_negative_gain`: the best remaining gain was negative.
    NegativeGain,
    /// No remaining item fits the remaining cost budget.
    CostBudget,
    /// No candidate was left (the pool, or a GreeDi union, is smaller than the count).
    Exhausted,
}

impl Stop {
    /// Short name used in reports (`zero_gain`, `negative_gain`, `cost_budget`, `exhausted`).
    pub fn name(&self) -> &'static str {
        match self {
            Stop::ZeroGain => "zero_gain",
            Stop::NegativeGain => "negative_gain",
            Stop::CostBudget => "cost_budget",
            Stop::Exhausted => "exhausted",
        }
    }
}

/// Tie ranks for `n` candidates: a permutation of `0..n` (Fisher-Yates on a
/// xoshiro256++ stream seeded from `seed` with its own stream constant, so it
/// is independent of the stochastic samples and of GreeDi's partition).
/// Depends only on `(n, seed)`: never on the budget or the thread count.
pub fn tie_ranks(n: usize, seed: u64) -> Vec<u64> {
    let mut rank: Vec<u64> = (0..n as u64).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xD1B5_4A32_D192_ED03);
    for i in (1..n).rev() {
        let r = below(&mut rng, i + 1);
        rank.swap(i, r);
    }
    rank
}

/// The outcome of one greedy run.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Chosen candidates in selection order.
    pub indices: Vec<usize>,
    /// Marginal gain of each at the time it was chosen (not divided by cost).
    pub gains: Vec<f64>,
    /// `f(initial ∪ chosen)`.
    pub objective: f64,
    /// Number of gain evaluations (a work measure).
    pub evaluations: u64,
    /// Set when fewer than `count` items were chosen: why.
    pub stop: Option<Stop>,
}

/// A lazy-heap entry: the candidate under the one ordering (key = gain or gain / cost,
/// then tie rank, then index; see [`crate::order`]) with its gain and freshness stamp.
#[derive(Clone, Copy)]
struct Item {
    best: Ranked<f64>,
    gain: f64,
    stamp: u64,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.best == o.best
    }
}
impl Eq for Item {}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        self.best.cmp(&o.best)
    }
}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct Run<'p, 'a> {
    p: &'p mut Problem<'a>,
    cfg: &'p RunConfig,
    taken: Vec<bool>,
    remaining: f64,
    out: Selection,
    evals: u64,
    /// Tie rank per candidate.
    rank: Vec<u64>,
    /// Top-k: the gain rules never stop it.
    ignore_stop_rules: bool,
}

impl Run<'_, '_> {
    /// `(key, j)` beats `(key2, j2)` under the one ordering.
    fn better(&self, key: f64, j: usize, key2: f64, j2: usize) -> bool {
        Ranked::of(key, &self.rank, j) > Ranked::of(key2, &self.rank, j2)
    }
    fn key(&self, j: usize, g: f64) -> f64 {
        match &self.cfg.costs {
            Some(c) => g / c[j],
            None => g,
        }
    }
    fn fits(&self, j: usize) -> bool {
        match &self.cfg.costs {
            Some(c) => c[j] <= self.remaining,
            None => true,
        }
    }
    /// Whether a stop rule ends the run before taking an item of gain `g`;
    /// records the reason.
    fn should_stop(&mut self, g: f64) -> bool {
        if self.ignore_stop_rules
            || (self.cfg.exempt_first && self.out.indices.is_empty() && self.cfg.initial.is_empty())
        {
            return false;
        }
        if self.cfg.stop_if_negative_gain && g < 0.0 {
            self.out.stop = Some(Stop::NegativeGain);
            return true;
        }
        if self.cfg.stop_if_zero_gain && g.abs() < self.cfg.zero_tol {
            self.out.stop = Some(Stop::ZeroGain);
            return true;
        }
        false
    }
    fn done(&self) -> bool {
        self.out.indices.len() >= self.cfg.count
    }
    fn gains(&mut self, cands: &[usize], out: &mut [f64]) -> CoreResult<()> {
        self.evals += cands.len() as u64;
        self.p.gains(cands, out)
    }
    fn take(&mut self, j: usize, g: f64) -> CoreResult<()> {
        self.p.insert(j)?;
        self.taken[j] = true;
        if let Some(c) = &self.cfg.costs {
            self.remaining -= c[j];
        }
        self.out.indices.push(j);
        self.out.gains.push(g);
        self.out.objective += g;
        Ok(())
    }
    fn open(&self) -> Vec<usize> {
        (0..self.taken.len())
            .filter(|&j| !self.taken[j] && self.fits(j))
            .collect()
    }
}

/// Batch size for re-evaluating stale candidates: one per thread is the
/// minimum useful; the result does not depend on it.
fn batch_size(on_the_fly: bool) -> usize {
    let t = rayon::current_num_threads().max(1);
    match (t, on_the_fly) {
        (1, false) => 1,
        (_, false) => 2 * t,
        (_, true) => 16 * t,
    }
}

/// Maximise `p` under `cfg`. Call inside the caller's rayon pool.
pub fn maximize(p: &mut Problem<'_>, cfg: &RunConfig) -> CoreResult<Selection> {
    let n = p.n();
    if let Some(c) = &cfg.costs {
        if c.len() != n {
            return Err(CoreError::Shape(format!(
                "costs have length {}, the pool has {n} items",
                c.len()
            )));
        }
        if let Some(i) = c.iter().position(|v| !v.is_finite() || *v <= 0.0) {
            return Err(CoreError::Value(format!(
                "costs[{i}] = {}; costs must be finite and > 0",
                c[i]
            )));
        }
    }
    let remaining = match (&cfg.costs, cfg.cost_budget) {
        (Some(_), Some(b)) if b.is_finite() && b > 0.0 => b,
        (Some(_), Some(b)) => {
            return Err(CoreError::Value(format!(
                "cost budget must be finite and > 0, got {b}"
            )))
        }
        (Some(_), None) => return Err(CoreError::Value("costs need a total cost budget".into())),
        (None, _) => f64::INFINITY,
    };
    let rank = match &cfg.tie_ranks {
        Some(r) if r.len() == n => r.clone(),
        Some(r) => {
            return Err(CoreError::Shape(format!(
                "tie ranks have length {}, the pool has {n} items",
                r.len()
            )))
        }
        None => tie_ranks(n, cfg.seed),
    };
    let ignore_stop_rules = p.is_modular();
    let mut run = Run {
        p,
        cfg,
        taken: vec![false; n],
        remaining,
        out: Selection {
            indices: Vec::new(),
            gains: Vec::new(),
            objective: 0.0,
            evaluations: 0,
            stop: None,
        },
        evals: 0,
        rank,
        ignore_stop_rules,
    };
    for &j in &cfg.initial {
        if j >= n {
            return Err(CoreError::Value(format!(
                "initial index {j} out of range for a pool of {n}"
            )));
        }
        if run.taken[j] {
            return Err(CoreError::Value(format!("initial index {j} given twice")));
        }
        let mut g = [0f64];
        run.p.gains(&[j], &mut g)?;
        run.p.insert(j)?;
        run.taken[j] = true;
        run.out.objective += g[0];
    }
    let on_the_fly = run.p.mode_name() == "onthefly";
    match cfg.optimizer {
        Optimizer::Naive => naive(&mut run)?,
        Optimizer::Lazy => lazy(&mut run, batch_size(on_the_fly))?,
        Optimizer::Stochastic { epsilon } => {
            stochastic(&mut run, epsilon, false, batch_size(on_the_fly))?
        }
        Optimizer::LazierThanLazy { epsilon } => {
            stochastic(&mut run, epsilon, true, batch_size(on_the_fly))?
        }
    }
    if let Some(v) = run.p.objective_override() {
        // disparity-min: the objective is the minimum pairwise distance (plus
        // any modular quality of the chosen items).
        let q: f64 = run
            .out
            .indices
            .iter()
            .chain(&cfg.initial)
            .map(|&j| run.p.quality_of(j))
            .sum();
        run.out.objective = v + q;
    }
    run.out.evaluations = run.evals;
    if run.out.indices.len() < cfg.count && run.out.stop.is_none() {
        // No stop rule fired: the loop ran out of candidates. Any item still
        // untaken did not fit the cost budget.
        run.out.stop = Some(if run.taken.iter().any(|&t| !t) {
            Stop::CostBudget
        } else {
            Stop::Exhausted
        });
    }
    Ok(run.out)
}

fn naive(run: &mut Run<'_, '_>) -> CoreResult<()> {
    let mut gains = Vec::new();
    while !run.done() {
        let cands = run.open();
        if cands.is_empty() {
            break;
        }
        gains.resize(cands.len(), 0.0);
        run.gains(&cands, &mut gains)?;
        let mut bi = 0;
        let mut bk = run.key(cands[0], gains[0]);
        for (i, (&j, &g)) in cands.iter().zip(&gains).enumerate().skip(1) {
            let k = run.key(j, g);
            if run.better(k, j, bk, cands[bi]) {
                bi = i;
                bk = k;
            }
        }
        if run.should_stop(gains[bi]) {
            break;
        }
        run.take(cands[bi], gains[bi])?;
    }
    Ok(())
}

fn lazy(run: &mut Run<'_, '_>, batch: usize) -> CoreResult<()> {
    let cands = run.open();
    let mut gains = vec![0f64; cands.len()];
    run.gains(&cands, &mut gains)?;
    let mut heap: BinaryHeap<Item> = cands
        .iter()
        .zip(&gains)
        .map(|(&j, &g)| Item {
            best: Ranked::of(run.key(j, g), &run.rank, j),
            gain: g,
            stamp: 0,
        })
        .collect();
    let mut version: u64 = 0;
    let mut stale: Vec<usize> = Vec::with_capacity(batch);
    let mut buf = vec![0f64; batch];
    while !run.done() {
        // Items that no longer fit never will (the remaining budget only shrinks).
        while heap.peek().is_some_and(|t| !run.fits(t.best.idx)) {
            heap.pop();
        }
        let Some(top) = heap.peek().copied() else {
            break;
        };
        if top.stamp == version {
            heap.pop();
            if run.should_stop(top.gain) {
                break;
            }
            run.take(top.best.idx, top.gain)?;
            version += 1;
            continue;
        }
        stale.clear();
        while stale.len() < batch {
            match heap.peek() {
                Some(t) if t.stamp != version => {
                    let t = heap.pop().map(|t| t.best.idx);
                    if let Some(j) = t {
                        if run.fits(j) {
                            stale.push(j);
                        }
                    }
                }
                _ => break,
            }
        }
        let out = &mut buf[..stale.len()];
        let batch_items: Vec<usize> = stale.clone();
        run.gains(&batch_items, out)?;
        for (&j, &g) in batch_items.iter().zip(out.iter()) {
            heap.push(Item {
                best: Ranked::of(run.key(j, g), &run.rank, j),
                gain: g,
                stamp: version,
            });
        }
    }
    Ok(())
}

/// Uniform integer in `0..m` (Lemire's multiply-shift; m < 2^32 in practice).
#[inline]
fn below(rng: &mut Xoshiro256PlusPlus, m: usize) -> usize {
    ((u128::from(rng.next_u64()) * m as u128) >> 64) as usize
}

fn stochastic(run: &mut Run<'_, '_>, epsilon: f64, lazier: bool, batch: usize) -> CoreResult<()> {
    if !(epsilon > 0.0 && epsilon < 1.0) {
        return Err(CoreError::Value(format!(
            "epsilon must be in (0, 1), got {epsilon}"
        )));
    }
    let n = run.taken.len();
    let k = run.cfg.count.max(1);
    let sample_size = ((n as f64 / k as f64) * (1.0 / epsilon).ln())
        .ceil()
        .max(1.0) as usize;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(run.cfg.seed);
    let mut avail = run.open();
    // Lazier-than-lazy: stale upper bounds of the key, +inf = never evaluated.
    let mut bound = vec![f64::INFINITY; if lazier { n } else { 0 }];
    let mut fresh_gain = vec![0f64; if lazier { n } else { 0 }];
    let mut stamp = vec![u64::MAX; if lazier { n } else { 0 }];
    let mut version: u64 = 0;
    let mut gains = Vec::new();
    while !run.done() && !avail.is_empty() {
        let s = sample_size.min(avail.len());
        for i in 0..s {
            let r = i + below(&mut rng, avail.len() - i);
            avail.swap(i, r);
        }
        // Positions in avail[..s] of candidates that no longer fit.
        let mut drop: Vec<usize> = (0..s).filter(|&i| !run.fits(avail[i])).collect();
        let sample: Vec<(usize, usize)> = (0..s)
            .filter(|&i| run.fits(avail[i]))
            .map(|i| (i, avail[i]))
            .collect();
        let mut best: Option<(f64, f64, usize, usize)> = None; // (key, gain, j, pos)
        if !lazier {
            let cands: Vec<usize> = sample.iter().map(|x| x.1).collect();
            gains.resize(cands.len(), 0.0);
            run.gains(&cands, &mut gains)?;
            for (&(pos, j), &g) in sample.iter().zip(&gains) {
                let key = run.key(j, g);
                if best.is_none_or(|b| run.better(key, j, b.0, b.2)) {
                    best = Some((key, g, j, pos));
                }
            }
        } else {
            let mut order = sample.clone();
            let rank = &run.rank;
            // Best bound first, under the one ordering.
            order.sort_by(|a, b| {
                Ranked::of(bound[b.1], rank, b.1).cmp(&Ranked::of(bound[a.1], rank, a.1))
            });
            let mut i = 0;
            while i < order.len() {
                if let Some(b) = best {
                    let (_, j) = order[i];
                    if !run.better(bound[j], j, b.0, b.2) {
                        break;
                    }
                }
                let end = (i + batch).min(order.len());
                let chunk: Vec<usize> = order[i..end]
                    .iter()
                    .map(|x| x.1)
                    .filter(|&j| stamp[j] != version)
                    .collect();
                gains.resize(chunk.len(), 0.0);
                run.gains(&chunk, &mut gains)?;
                for (&j, &g) in chunk.iter().zip(&gains) {
                    bound[j] = run.key(j, g);
                    fresh_gain[j] = g;
                    stamp[j] = version;
                }
                for &(pos, j) in &order[i..end] {
                    let key = bound[j];
                    if best.is_none_or(|b| run.better(key, j, b.0, b.2)) {
                        best = Some((key, fresh_gain[j], j, pos));
                    }
                }
                i = end;
            }
        }
        if let Some((_, g, j, pos)) = best {
            if run.should_stop(g) {
                break;
            }
            run.take(j, g)?;
            version += 1;
            drop.push(pos);
        }
        drop.sort_unstable_by(|a, b| b.cmp(a));
        for pos in drop {
            avail.swap_remove(pos);
        }
    }
    Ok(())
}
