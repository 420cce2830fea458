//! Submodular and greedy subset selection over large candidate pools.
//!
//! * [`config`]: the names, defaults and argument checks of a request (what
//!   the Python binding passes through as strings and integers).
//! * [`functions`]: FL (with a separate represented set), FLMI, FLCG, graph
//!   cut, disparity-sum / -min, modular (top-k) and a modular quality term that
//!   mixes into any of them.
//! * [`kernels`]: dense (borrowed), sparse kNN (built blockwise), on the fly
//!   (any [`PairwiseSource`]: embeddings' cosine, the InfluenceNetwork).
//! * [`optimizers`]: naive, lazy, stochastic, lazier-than-lazy greedy; this
//!   module adds partition-and-merge (GreeDi) and [`run`], the one entry point
//!   that builds the kernel a mode asks for, times each stage and maximises.
//!
//! Determinism: exact ties between equal gains break by a seeded permutation
//! of the pool ([`tie_ranks`], drawn from the run's seed; GreeDi's parts and
//! merge use the global ranks of their items; a kNN kernel keeps, among equal
//! similarities, the neighbours of lower rank), every other random choice
//! comes from a seeded xoshiro256++ stream too, and every result is
//! bit-identical for any `n_jobs`. Top-k never stops on a zero or negative
//! score; a run that returns fewer items than asked says why
//! ([`Selection::stop`]).

pub mod config;
mod cosine;
pub mod functions;
pub mod kernels;
mod knn;
pub mod optimizers;
mod simd;

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use config::{non_negative, FunctionParams};
pub use functions::{Extras, Problem, SetFunction};
pub use kernels::{
    CosineSource, CosineTransform, DenseSource, KernelData, SharedSource, SparseKernel,
};
pub use optimizers::{maximize, tie_ranks, Optimizer, RunConfig, Selection, Stop};

use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;

/// Where the values of one kernel come from.
#[derive(Clone)]
pub enum KernelSpec<'a> {
    /// A precomputed `(n, m)` float32 C-contiguous matrix, borrowed.
    Dense(ArrayView2<'a, f32>),
    /// Cosine similarity of embeddings: `rows` (n, d) against `cols` (m, d), or
    /// against `rows` themselves when `cols` is `None`.
    Embeddings {
        rows: ArrayView2<'a, f32>,
        cols: Option<ArrayView2<'a, f32>>,
        transform: CosineTransform,
    },
    /// Any on-the-fly source (e.g. the InfluenceNetwork scorer).
    Source(SharedSource),
}

impl KernelSpec<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            KernelSpec::Dense(a) => a.dim(),
            KernelSpec::Embeddings { rows, cols, .. } => (
                rows.nrows(),
                cols.as_ref().map_or(rows.nrows(), |c| c.nrows()),
            ),
            KernelSpec::Source(s) => (s.n_rows(), s.n_cols()),
        }
    }
    fn source(&self) -> CoreResult<SharedSource> {
        match self {
            KernelSpec::Dense(a) => {
                // Owned copy: only used for small GreeDi parts and kNN builds of
                // user-given dense kernels.
                Ok(Arc::new(OwnedDense(a.to_owned())))
            }
            KernelSpec::Embeddings {
                rows,
                cols,
                transform,
            } => Ok(Arc::new(CosineSource::new(*rows, *cols, *transform)?)),
            KernelSpec::Source(s) => Ok(Arc::clone(s)),
        }
    }
}

struct OwnedDense(Array2<f32>);
impl PairwiseSource for OwnedDense {
    fn n_rows(&self) -> usize {
        self.0.nrows()
    }
    fn n_cols(&self) -> usize {
        self.0.ncols()
    }
    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()> {
        DenseSource {
            data: self.0.view(),
        }
        .block(rows, cols, out)
    }
}

/// A square restriction `K[idx[a], idx[b]]` of another source (GreeDi parts).
struct SubSource {
    inner: SharedSource,
    idx: Vec<usize>,
}
impl PairwiseSource for SubSource {
    fn n_rows(&self) -> usize {
        self.idx.len()
    }
    fn n_cols(&self) -> usize {
        self.idx.len()
    }
    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()> {
        let map = |v: &[usize]| -> CoreResult<Vec<usize>> {
            v.iter()
                .map(|&i| {
                    self.idx
                        .get(i)
                        .copied()
                        .ok_or_else(|| CoreError::Value(format!("index {i} out of range")))
                })
                .collect()
        };
        self.inner.block(&map(rows)?, &map(cols)?, out)
    }
}

/// How the main kernel is held while selecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The full `(n, m)` matrix in memory (borrowed if given, else computed).
    Dense,
    /// A kNN kernel keeping `k` neighbours per represented item.
    Sparse { k: usize },
    /// Entries computed when needed; O(n d) memory.
    OnTheFly,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Sparse { .. } => "sparse",
            Mode::OnTheFly => "onthefly",
        }
    }
}

/// Partition-and-merge (GreeDi, Mirzasoleiman et al. 2013) settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Greedi {
    /// Number of parts (>= 1); items are assigned by a seeded shuffle.
    pub parts: usize,
    /// Each part keeps `ceil(local_factor * count / parts)` items (at most its size).
    pub local_factor: f64,
}

/// Everything one selection needs.
pub struct Request<'a> {
    pub function: SetFunction,
    /// Main kernel: candidate x represented (square for most functions).
    pub kernel: Option<KernelSpec<'a>>,
    /// FLMI query kernel, candidate x query.
    pub query: Option<KernelSpec<'a>>,
    /// FLCG private kernel, candidate x private.
    pub private: Option<KernelSpec<'a>>,
    /// Modular scores (n,) and their weight.
    pub quality: Option<(Vec<f32>, f64)>,
    pub mode: Mode,
    pub greedi: Option<Greedi>,
    pub run: RunConfig,
}

/// A selection plus where the time went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub selection: Selection,
    /// (stage, seconds) in order: "kernel", "select", ...
    pub timings: Vec<(String, f64)>,
    pub mode: String,
    pub optimizer: String,
}

/// The kernel a mode asks for; `rank`: tie ranks of the rows (candidates),
/// deciding equal values when a kNN kernel keeps each column's neighbours.
fn build_kernel<'k>(
    spec: &'k KernelSpec<'_>,
    mode: Mode,
    owned: &'k mut Option<Array2<f32>>,
    rank: &[u64],
) -> CoreResult<KernelData<'k>> {
    let (n, m) = spec.shape();
    if n == 0 || m == 0 {
        return Err(CoreError::Shape(format!(
            "kernel shape ({n}, {m}) is empty; the pool must not be empty"
        )));
    }
    match (mode, spec) {
        (Mode::Dense, KernelSpec::Dense(a)) => Ok(KernelData::Dense(a.view())),
        (
            Mode::Dense,
            KernelSpec::Embeddings {
                rows,
                cols: None,
                transform,
            },
        ) => {
            let bytes = (n as u128) * (n as u128) * 4;
            if bytes > (isize::MAX as u128) {
                return Err(CoreError::Memory(format!(
                    "a dense {n} x {n} kernel needs {bytes} bytes"
                )));
            }
            *owned = Some(CosineSource::new(*rows, None, *transform)?.dense_self()?);
            let view = owned
                .as_ref()
                .map(|a| a.view())
                .ok_or_else(|| CoreError::Runtime("kernel vanished".into()))?;
            Ok(KernelData::Dense(view))
        }
        (Mode::Dense, _) => {
            let bytes = (n as u128) * (m as u128) * 4;
            if bytes > (isize::MAX as u128) {
                return Err(CoreError::Memory(format!(
                    "a dense {n} x {m} kernel needs {bytes} bytes"
                )));
            }
            let src = spec.source()?;
            let mut a = Array2::<f32>::zeros((n, m));
            {
                let cols: Vec<usize> = (0..m).collect();
                let rows_per = (4_000_000 / m.max(1)).clamp(1, 1024);
                let slice = a
                    .as_slice_mut()
                    .ok_or_else(|| CoreError::Runtime("fresh array not contiguous".into()))?;
                use rayon::prelude::*;
                slice
                    .par_chunks_mut(rows_per * m)
                    .enumerate()
                    .try_for_each(|(c, out)| {
                        let r0 = c * rows_per;
                        let rows: Vec<usize> = (r0..r0 + out.len() / m).collect();
                        src.block(&rows, &cols, out)
                    })?;
            }
            *owned = Some(a);
            let view = owned
                .as_ref()
                .map(|a| a.view())
                .ok_or_else(|| CoreError::Runtime("kernel vanished".into()))?;
            Ok(KernelData::Dense(view))
        }
        (
            Mode::Sparse { k },
            KernelSpec::Embeddings {
                rows,
                cols: None,
                transform,
            },
        ) => {
            let src = CosineSource::new(*rows, None, *transform)?;
            Ok(KernelData::Sparse(Arc::new(
                SparseKernel::knn_cosine_self_ranked(&src, k, rank)?,
            )))
        }
        (Mode::Sparse { k }, _) => {
            let src = spec.source()?;
            Ok(KernelData::Sparse(Arc::new(
                SparseKernel::knn_from_source_ranked(src.as_ref(), k, rank)?,
            )))
        }
        (Mode::OnTheFly, KernelSpec::Dense(a)) => Ok(KernelData::Dense(a.view())),
        (Mode::OnTheFly, _) => Ok(KernelData::Source(spec.source()?)),
    }
}

/// Side kernels (query / private) are reduced to a per-row max once; keep them
/// on the fly unless given dense.
fn side_kernel<'k>(spec: &'k Option<KernelSpec<'_>>) -> CoreResult<Option<KernelData<'k>>> {
    Ok(match spec {
        None => None,
        Some(KernelSpec::Dense(a)) => Some(KernelData::Dense(a.view())),
        Some(s) => Some(KernelData::Source(s.source()?)),
    })
}

/// The kernel restricted to the items `idx` (a GreeDi part or the merge set);
/// `rank`: the tie ranks of those items.
fn part_kernel<'k>(
    cosine_self: Option<&CosineSource>,
    src: &SharedSource,
    idx: &[usize],
    mode: Mode,
    owned: &'k mut Option<Array2<f32>>,
    rank: &[u64],
) -> CoreResult<KernelData<'k>> {
    if let (Some(c), Mode::Sparse { k }) = (cosine_self, mode) {
        let sub = c.subset(idx)?;
        return Ok(KernelData::Sparse(Arc::new(
            SparseKernel::knn_cosine_self_ranked(&sub, k, rank)?,
        )));
    }
    let sub: SharedSource = Arc::new(SubSource {
        inner: Arc::clone(src),
        idx: idx.to_vec(),
    });
    let spec: KernelSpec<'static> = KernelSpec::Source(sub);
    match build_kernel(&spec, mode, owned, rank)? {
        KernelData::Dense(_) => {
            let view = owned
                .as_ref()
                .map(|a| a.view())
                .ok_or_else(|| CoreError::Runtime("part kernel vanished".into()))?;
            Ok(KernelData::Dense(view))
        }
        KernelData::Sparse(s) => Ok(KernelData::Sparse(s)),
        KernelData::Source(s) => Ok(KernelData::Source(s)),
    }
}

/// Run one selection in a pool of `n_jobs` threads (0 = all cores).
pub fn run(req: &Request<'_>, n_jobs: usize) -> CoreResult<Outcome> {
    let pool = crate::thread_pool(n_jobs)?;
    pool.install(|| run_in_pool(req))
}

fn run_in_pool(req: &Request<'_>) -> CoreResult<Outcome> {
    if let Some(g) = req.greedi {
        return run_greedi(req, g);
    }
    let mut timings = Vec::new();
    let t0 = Instant::now();
    let n_items = match (&req.kernel, &req.quality) {
        (Some(spec), _) => spec.shape().0,
        (None, Some((s, _))) => s.len(),
        (None, None) => 0,
    };
    let ranks = resolve_ranks(&req.run, n_items)?;
    let mut owned = None;
    let kernel = match &req.kernel {
        Some(spec) => Some(build_kernel(spec, req.mode, &mut owned, &ranks)?),
        None => None,
    };
    let extras = Extras {
        query: side_kernel(&req.query)?,
        private: side_kernel(&req.private)?,
        quality: req.quality.clone(),
    };
    let mut problem = Problem::new(&req.function, kernel, extras)?;
    timings.push(("kernel".to_string(), t0.elapsed().as_secs_f64()));
    let mode = problem.mode_name().to_string();
    let mut cfg = req.run.clone();
    let optimizer = effective_optimizer(&req.function, cfg.optimizer);
    cfg.optimizer = optimizer;
    cfg.exempt_first = matches!(req.function, SetFunction::DisparitySum);
    cfg.tie_ranks = Some(ranks);
    let t1 = Instant::now();
    let selection = maximize(&mut problem, &cfg)?;
    timings.push(("select".to_string(), t1.elapsed().as_secs_f64()));
    Ok(Outcome {
        selection,
        timings,
        mode,
        optimizer: optimizer.name().to_string(),
    })
}

/// The run's tie ranks for `n` items: the given ones (checked), else drawn from the seed.
fn resolve_ranks(run: &RunConfig, n: usize) -> CoreResult<Vec<u64>> {
    match &run.tie_ranks {
        Some(r) if r.len() == n => Ok(r.clone()),
        Some(r) => Err(CoreError::Shape(format!(
            "tie ranks have length {}, the pool has {n} items",
            r.len()
        ))),
        None => Ok(tie_ranks(n, run.seed)),
    }
}

/// Lazy variants assume gains never grow; disparity-sum's do, so they run
/// their eager counterparts (same answer as the lazy code would aim for).
fn effective_optimizer(f: &SetFunction, o: Optimizer) -> Optimizer {
    if f.gains_never_grow() {
        return o;
    }
    match o {
        Optimizer::Lazy => Optimizer::Naive,
        Optimizer::LazierThanLazy { epsilon } => Optimizer::Stochastic { epsilon },
        other => other,
    }
}

/// The parts of partition-and-merge: a seeded shuffle of `0..n` cut into
/// `min(parts, n)` contiguous chunks, each sorted (a part's local index `a`
/// is global item `part[a]`; ties break by the global [`tie_ranks`] of the
/// items). Public so that a distributed driver (Ray) can cut the same parts
/// and reproduce a local run exactly.
pub fn greedi_partition(n: usize, parts: usize, seed: u64) -> Vec<Vec<usize>> {
    if n == 0 || parts == 0 {
        return Vec::new();
    }
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        let r = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        perm.swap(i, r);
    }
    let chunk = n.div_ceil(parts.min(n));
    perm.chunks(chunk)
        .map(|p| {
            let mut idx = p.to_vec();
            idx.sort_unstable();
            idx
        })
        .collect()
}

/// Items each part keeps before the merge: `ceil(local_factor * count / parts)`, at least 1.
pub fn greedi_local_budget(count: usize, parts: usize, local_factor: f64) -> usize {
    ((local_factor * count as f64 / parts.max(1) as f64).ceil() as usize).max(1)
}

/// What a distributed driver needs to run the parts of a local partition-and-merge:
/// the parts [`greedi_partition`] cuts and the per-part budget for `count`.
pub fn greedi_plan(
    n: usize,
    parts: usize,
    seed: u64,
    count: usize,
    local_factor: f64,
) -> CoreResult<(Vec<Vec<usize>>, usize)> {
    if parts == 0 || !(local_factor.is_finite() && local_factor > 0.0) {
        return Err(CoreError::Value(
            "greedi needs parts >= 1 and a positive local factor".into(),
        ));
    }
    let cut = greedi_partition(n, parts, seed);
    let local = greedi_local_budget(count, parts.min(n.max(1)), local_factor);
    Ok((cut, local))
}

fn run_greedi(req: &Request<'_>, g: Greedi) -> CoreResult<Outcome> {
    if matches!(
        req.function,
        SetFunction::Flmi { .. } | SetFunction::Flcg { .. }
    ) {
        return Err(CoreError::Value("partition-and-merge supports fl, graph-cut, disparity and topk/mix; run flmi/flcg in sparse or on-the-fly mode".into()));
    }
    if req.run.costs.is_some() || !req.run.initial.is_empty() {
        return Err(CoreError::Value(
            "partition-and-merge does not take costs or an initial set".into(),
        ));
    }
    if g.parts == 0 || !(g.local_factor.is_finite() && g.local_factor > 0.0) {
        return Err(CoreError::Value(
            "greedi needs parts >= 1 and a positive local factor".into(),
        ));
    }
    let spec = req
        .kernel
        .as_ref()
        .ok_or_else(|| CoreError::Value("partition-and-merge needs a kernel".into()))?;
    let (n, m) = spec.shape();
    if n != m {
        return Err(CoreError::Shape(format!(
            "partition-and-merge needs a square kernel, got ({n}, {m})"
        )));
    }
    if n == 0 {
        return Err(CoreError::Shape("the pool is empty".into()));
    }
    let t0 = Instant::now();
    if let KernelSpec::Dense(a) = spec {
        // Parts only read diagonal blocks; check every entry once up front so a
        // bad value is reported wherever it is.
        let unit = matches!(
            req.function,
            SetFunction::DisparitySum | SetFunction::DisparityMin
        );
        functions::check_finite_nonneg_dense(a, "kernel", unit)?;
    }
    // The square cosine kernel of embeddings keeps its concrete type so that
    // each part builds its kNN kernel with the symmetric tile path.
    let cosine_self = match spec {
        KernelSpec::Embeddings {
            rows,
            cols: None,
            transform,
        } if matches!(req.mode, Mode::Sparse { .. }) => {
            Some(Arc::new(CosineSource::new(*rows, None, *transform)?))
        }
        _ => None,
    };
    let src: SharedSource = match &cosine_self {
        Some(c) => Arc::clone(c) as SharedSource,
        None => spec.source()?,
    };
    let parts = greedi_partition(n, g.parts, req.run.seed);
    let ranks = resolve_ranks(&req.run, n)?;
    let ranks_of = |idx: &[usize]| -> Vec<u64> { idx.iter().map(|&i| ranks[i]).collect() };
    let k = req.run.count;
    let local_k = greedi_local_budget(k, g.parts.min(n), g.local_factor);
    let mut union: Vec<usize> = Vec::new();
    let mut t_local = 0.0;
    let mut t_kernel = t0.elapsed().as_secs_f64();
    // The first part that stopped short, and why (reported when the union is
    // smaller than the budget).
    let mut part_stop: Option<Stop> = None;
    let solve = |idx: Vec<usize>,
                 budget: usize,
                 tk: &mut f64,
                 ts: &mut f64|
     -> CoreResult<(Vec<usize>, Option<Stop>)> {
        let tk0 = Instant::now();
        let mut owned = None;
        let part_ranks = ranks_of(&idx);
        let kernel = part_kernel(
            cosine_self.as_deref(),
            &src,
            &idx,
            req.mode,
            &mut owned,
            &part_ranks,
        )?;
        let quality = req
            .quality
            .as_ref()
            .map(|(s, w)| (idx.iter().map(|&i| s[i]).collect(), *w));
        let mut problem = Problem::new(
            &req.function,
            Some(kernel),
            Extras {
                quality,
                ..Default::default()
            },
        )?;
        *tk += tk0.elapsed().as_secs_f64();
        let ts0 = Instant::now();
        let mut cfg = req.run.clone();
        cfg.count = budget.min(idx.len());
        cfg.optimizer = effective_optimizer(&req.function, cfg.optimizer);
        cfg.exempt_first = matches!(req.function, SetFunction::DisparitySum);
        cfg.tie_ranks = Some(part_ranks);
        let sel = maximize(&mut problem, &cfg)?;
        *ts += ts0.elapsed().as_secs_f64();
        Ok((sel.indices.into_iter().map(|a| idx[a]).collect(), sel.stop))
    };
    for idx in parts {
        let (picked, stop) = solve(idx, local_k, &mut t_kernel, &mut t_local)?;
        union.extend(picked);
        part_stop = part_stop.or(stop);
    }
    union.sort_unstable();
    // Merge: greedy over the union of local picks, objective on the union.
    let tk0 = Instant::now();
    let mut owned = None;
    let union_ranks = ranks_of(&union);
    let kernel = part_kernel(
        cosine_self.as_deref(),
        &src,
        &union,
        req.mode,
        &mut owned,
        &union_ranks,
    )?;
    let quality = req
        .quality
        .as_ref()
        .map(|(s, w)| (union.iter().map(|&i| s[i]).collect(), *w));
    let mut problem = Problem::new(
        &req.function,
        Some(kernel),
        Extras {
            quality,
            ..Default::default()
        },
    )?;
    t_kernel += tk0.elapsed().as_secs_f64();
    let ts0 = Instant::now();
    let mut cfg = req.run.clone();
    cfg.count = k.min(union.len());
    let optimizer = effective_optimizer(&req.function, cfg.optimizer);
    cfg.optimizer = optimizer;
    cfg.exempt_first = matches!(req.function, SetFunction::DisparitySum);
    cfg.tie_ranks = Some(union_ranks);
    let mut sel = maximize(&mut problem, &cfg)?;
    let t_merge = ts0.elapsed().as_secs_f64();
    sel.indices = sel.indices.into_iter().map(|a| union[a]).collect();
    sel.stop = if sel.indices.len() >= k {
        None
    } else {
        // The merge's own stop rule, else a part's, else the union was too small.
        Some(sel.stop.or(part_stop).unwrap_or(Stop::Exhausted))
    };
    Ok(Outcome {
        selection: sel,
        timings: vec![
            ("kernel".to_string(), t_kernel),
            ("select_local".to_string(), t_local),
            ("select_merge".to_string(), t_merge),
        ],
        mode: format!("greedi-{}", req.mode.name()),
        optimizer: optimizer.name().to_string(),
    })
}
