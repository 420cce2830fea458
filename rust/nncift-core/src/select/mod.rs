//! Submodular and greedy subset selection over large candidate pools.
//!
//! * [`config`]: the names, defaults and argument checks of a request (what
//!   the Python binding passes through as strings and integers).
//! * [`functions`]: FL (with a separate represented set), FLMI, FLCG, graph
//!   cut, disparity-sum / -min, modular (top-k) and a modular quality term that
//!   mixes into any of them.
//! * [`kernels`]: dense (borrowed), sparse kNN (built blockwise, `knn`), on the
//!   fly (any [`PairwiseSource`]: embeddings' cosine (`cosine`), the
//!   InfluenceNetwork).
//! * [`optimizers`]: naive, lazy, stochastic, lazier-than-lazy greedy.
//! * `greedi`: partition-and-merge (GreeDi); this module holds [`run`], the one
//!   entry point that builds the kernel a mode asks for, times each stage and
//!   maximises.
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
mod greedi;
pub mod kernels;
mod knn;
pub mod optimizers;
mod simd;

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};

pub use config::{non_negative, FunctionParams};
pub use functions::{Extras, Problem, SetFunction};
pub use greedi::{greedi_local_budget, greedi_partition, greedi_plan};
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

/// An owned dense matrix served through the on-the-fly (`PairwiseSource`) interface: how a
/// kernel computed elsewhere is fed to the block-wise code paths (and to tests of them).
pub struct OwnedDense(pub Array2<f32>);
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

/// Run one selection in a pool of `n_jobs` threads (0 = all cores).
pub fn run(req: &Request<'_>, n_jobs: usize) -> CoreResult<Outcome> {
    let pool = crate::thread_pool(n_jobs)?;
    pool.install(|| run_in_pool(req))
}

fn run_in_pool(req: &Request<'_>) -> CoreResult<Outcome> {
    if let Some(g) = req.greedi {
        return greedi::run_greedi(req, g);
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
    let cfg = solve_config(req, req.run.count, ranks);
    let optimizer = cfg.optimizer;
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

/// What [`maximize`] gets for `req` over items whose tie ranks are `ranks`, choosing at
/// most `count`: the effective optimizer, disparity-sum's exempt first pick and the ranks
/// (one run, a partition-and-merge part and its merge alike).
fn solve_config(req: &Request<'_>, count: usize, ranks: Vec<u64>) -> RunConfig {
    let mut cfg = req.run.clone();
    cfg.count = count;
    cfg.optimizer = effective_optimizer(&req.function, cfg.optimizer);
    cfg.exempt_first = matches!(req.function, SetFunction::DisparitySum);
    cfg.tie_ranks = Some(ranks);
    cfg
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
