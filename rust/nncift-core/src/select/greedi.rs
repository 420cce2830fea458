//! Partition-and-merge (GreeDi, Mirzasoleiman et al. 2013): cut the pool into seeded
//! parts, run the greedy on each part, then run the same greedy on the union of the local
//! picks. Parts and merge go through one solve step ([`Parts::solve`]): the kernel
//! restricted to the items, their global tie ranks, their quality scores, then
//! [`maximize`]. A distributed driver (Ray) cuts the same parts with
//! [`greedi_partition`] and reproduces a local run exactly.

use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{
    build_kernel, effective_optimizer, functions, maximize, resolve_ranks, solve_config,
    CosineSource, Extras, Greedi, KernelData, KernelSpec, Mode, Outcome, Problem, Request,
    Selection, SetFunction, SharedSource, SparseKernel, Stop,
};
use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;

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

/// What every solve step of one partition-and-merge run shares.
struct Parts<'r, 'a> {
    req: &'r Request<'a>,
    /// The square cosine kernel of embeddings, kept concrete so that each part builds
    /// its kNN kernel with the symmetric tile path.
    cosine_self: Option<Arc<CosineSource>>,
    src: SharedSource,
    /// Global tie ranks of the pool.
    ranks: Vec<u64>,
}

impl Parts<'_, '_> {
    /// The greedy over the items `idx` (sorted global indices) with at most `budget` picks:
    /// the kernel restricted to them, their global tie ranks and quality scores. Returns
    /// the selection with global indices; adds kernel and selection seconds to `tk`, `ts`.
    fn solve(
        &self,
        idx: &[usize],
        budget: usize,
        tk: &mut f64,
        ts: &mut f64,
    ) -> CoreResult<Selection> {
        let req = self.req;
        let tk0 = Instant::now();
        let mut owned = None;
        let part_ranks: Vec<u64> = idx.iter().map(|&i| self.ranks[i]).collect();
        let kernel = part_kernel(
            self.cosine_self.as_deref(),
            &self.src,
            idx,
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
        let cfg = solve_config(req, budget.min(idx.len()), part_ranks);
        let mut sel = maximize(&mut problem, &cfg)?;
        *ts += ts0.elapsed().as_secs_f64();
        sel.indices = sel.indices.into_iter().map(|a| idx[a]).collect();
        Ok(sel)
    }
}

pub(super) fn run_greedi(req: &Request<'_>, g: Greedi) -> CoreResult<Outcome> {
    if matches!(
        req.function,
        SetFunction::Flmi { .. } | SetFunction::Flcg { .. }
    ) {
        return Err(CoreError::Value(
            "partition-and-merge supports fl, graph-cut, disparity-sum, disparity-min and mix; \
             run flmi / flcg with another optimizer (sparse or on-the-fly mode for large pools)"
                .into(),
        ));
    }
    if req.run.costs.is_some() || !req.run.initial.is_empty() {
        return Err(CoreError::Value(
            "partition-and-merge does not take costs or an initial set".into(),
        ));
    }
    if matches!(req.function, SetFunction::Modular) {
        return Err(CoreError::Value(
            "topk needs no partition-and-merge (it is exact in one pass over the scores); \
             use another optimizer"
                .into(),
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
    let parts = Parts {
        req,
        src: match &cosine_self {
            Some(c) => Arc::clone(c) as SharedSource,
            None => spec.source()?,
        },
        cosine_self,
        ranks: resolve_ranks(&req.run, n)?,
    };
    let k = req.run.count;
    let local_k = greedi_local_budget(k, g.parts.min(n), g.local_factor);
    let mut union: Vec<usize> = Vec::new();
    let mut t_local = 0.0;
    let mut t_kernel = t0.elapsed().as_secs_f64();
    // The first part that stopped short, and why (reported when the union is
    // smaller than the budget).
    let mut part_stop: Option<Stop> = None;
    for idx in greedi_partition(n, g.parts, req.run.seed) {
        let sel = parts.solve(&idx, local_k, &mut t_kernel, &mut t_local)?;
        union.extend(sel.indices);
        part_stop = part_stop.or(sel.stop);
    }
    union.sort_unstable();
    // Merge: the same greedy over the union of local picks, objective on the union.
    let mut t_merge = 0.0;
    let mut sel = parts.solve(&union, k, &mut t_kernel, &mut t_merge)?;
    sel.stop = if sel.indices.len() >= k {
        None
    } else {
        // The merge's own stop rule, else a part's, else the union was too small.
        Some(sel.stop.or(part_stop).unwrap_or(Stop::Exhausted))
    };
    let optimizer = effective_optimizer(&req.function, req.run.optimizer);
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
