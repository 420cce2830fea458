//! Greedy maximisers: naive, lazy (priority queue), stochastic and
//! lazier-than-lazy. All break ties to the lowest index and evaluate gains in
//! batches whose results do not depend on the batch size, so the chosen set is
//! bit-identical for any thread count.
//!
//! Lazy and lazier-than-lazy keep stale gains as upper bounds. A heap entry is
//! ordered by (key desc, index asc); a fresh entry at the top is the exact
//! argmax with the lowest index among ties, so lazy greedy returns exactly what
//! naive greedy returns whenever gains never grow (true bit for bit here: each
//! term is monotone in the memoised state and sums run in a fixed order).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::functions::Problem;
use crate::error::{CoreError, CoreResult};

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
    pub seed: u64,
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
            exempt_first: false,
        }
    }
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
}

#[derive(Clone, Copy)]
struct Item {
    key: f64,
    gain: f64,
    j: usize,
    stamp: u64,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Item {}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key.total_cmp(&o.key).then_with(|| o.j.cmp(&self.j))
    }
}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// `(key, j)` beats `(key2, j2)`: larger key, then lower index.
#[inline]
fn better(key: f64, j: usize, key2: f64, j2: usize) -> bool {
    match key.total_cmp(&key2) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => j < j2,
    }
}

struct Run<'p, 'a> {
    p: &'p mut Problem<'a>,
    cfg: &'p RunConfig,
    taken: Vec<bool>,
    remaining: f64,
    out: Selection,
    evals: u64,
}

impl Run<'_, '_> {
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
    fn should_stop(&self, g: f64) -> bool {
        if self.cfg.exempt_first && self.out.indices.is_empty() && self.cfg.initial.is_empty() {
            return false;
        }
        (self.cfg.stop_if_negative_gain && g < 0.0)
            || (self.cfg.stop_if_zero_gain && g.abs() < self.cfg.zero_tol)
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
        },
        evals: 0,
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
            if better(k, j, bk, cands[bi]) {
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
            key: run.key(j, g),
            gain: g,
            j,
            stamp: 0,
        })
        .collect();
    let mut version: u64 = 0;
    let mut stale: Vec<usize> = Vec::with_capacity(batch);
    let mut buf = vec![0f64; batch];
    while !run.done() {
        // Items that no longer fit never will (the remaining budget only shrinks).
        while heap.peek().is_some_and(|t| !run.fits(t.j)) {
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
            run.take(top.j, top.gain)?;
            version += 1;
            continue;
        }
        stale.clear();
        while stale.len() < batch {
            match heap.peek() {
                Some(t) if t.stamp != version => {
                    let t = heap.pop().map(|t| t.j);
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
                key: run.key(j, g),
                gain: g,
                j,
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
                if best.is_none_or(|b| better(key, j, b.0, b.2)) {
                    best = Some((key, g, j, pos));
                }
            }
        } else {
            let mut order = sample.clone();
            order.sort_by(|a, b| {
                bound[b.1]
                    .total_cmp(&bound[a.1])
                    .then_with(|| a.1.cmp(&b.1))
            });
            let mut i = 0;
            while i < order.len() {
                if let Some(b) = best {
                    let (_, j) = order[i];
                    if !better(bound[j], j, b.0, b.2) {
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
                    if best.is_none_or(|b| better(key, j, b.0, b.2)) {
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
