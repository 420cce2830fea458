//! The set functions and their memoised state.
//!
//! Definitions follow submodlib (and docs/method.md), with `K[j, t]` oriented
//! candidate-major (see [`super::kernels`]); `best[t]` = similarity of
//! represented item `t` to its nearest chosen candidate (starting at 0):
//!
//! * FL:    `f(A) = sum_t max_{j in A} K[j, t]`, gain `sum_t max(K[j,t] - best[t], 0)`.
//! * FLMI:  `f(A) = sum_t min(max_{j in A} K[j,t], eta * max_q Q[t, q])` (square `K`).
//! * FLCG:  `f(A) = sum_t max(max_{j in A} K[j,t] - nu * max_p P[t, p], 0)` (square `K`):
//!   FL with `best` starting at `max(0, nu * max_p P[t, p])`.
//! * graph cut: `f(A) = sum_{j in A} sum_t K[j,t] - lambda * sum_{i,j in A} K[i,j]`.
//! * disparity-sum: `f(A) = sum_{i<j in A} (1 - K[i,j])` (needs `K` in `[0, 1]`).
//! * disparity-min: `f(A) = min_{i != j in A} (1 - K[i,j])`; not submodular. Greedy
//!   here is farthest-first: the criterion of a candidate is its distance to the
//!   nearest chosen item (1 for the first pick), which never grows, so lazy
//!   evaluation stays exact; the reported gain is that criterion.
//! * modular (top-k): `f(A) = sum_{j in A} s_j`; any function above can add
//!   `w * sum_{j in A} s_j` (the "mix" objective).
//!
//! Per-term arithmetic is `f32` (as submodlib), gains and objectives accumulate
//! in `f64` in a fixed order, so every result is independent of thread count.

use rayon::prelude::*;

use super::kernels::KernelData;
use super::simd::{any_outside, fl_gain, flmi_gain, max_into};
use crate::error::{CoreError, CoreResult};

/// Which set function to maximise, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum SetFunction {
    FacilityLocation,
    /// `eta`: query-relevance magnification.
    Flmi {
        eta: f32,
    },
    /// `nu`: privacy hardness.
    Flcg {
        nu: f32,
    },
    GraphCut {
        lambda: f32,
    },
    DisparitySum,
    DisparityMin,
    /// Only the modular quality term (top-k by score).
    Modular,
}

impl SetFunction {
    /// Short name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            SetFunction::FacilityLocation => "fl",
            SetFunction::Flmi { .. } => "flmi",
            SetFunction::Flcg { .. } => "flcg",
            SetFunction::GraphCut { .. } => "graph-cut",
            SetFunction::DisparitySum => "disparity-sum",
            SetFunction::DisparityMin => "disparity-min",
            SetFunction::Modular => "topk",
        }
    }
    /// Whether marginal gains can only shrink as the set grows (what lazy and
    /// lazier-than-lazy greedy rely on to stay exact).
    pub fn gains_never_grow(&self) -> bool {
        !matches!(self, SetFunction::DisparitySum)
    }
}

enum State {
    None,
    Fl {
        best: Vec<f32>,
        /// FLMI: per-represented-item cap `eta * max_q Q[t, q]`.
        cap: Option<Vec<f32>>,
    },
    Pairwise {
        kind: PairKind,
        /// graph cut: row sums; unused otherwise.
        rowsum: Vec<f64>,
        /// graph cut: sum of K[c, x] + K[x, c] over chosen x; disparity-sum: sum of
        /// 1 - K[c, x].
        acc: Vec<f64>,
        /// disparity-min: distance to the nearest chosen item.
        mind: Vec<f32>,
        diag: Vec<f32>,
        count: usize,
        current_min: f64,
        col: Vec<f32>,
        /// graph cut: row `j` of the kernel on insert (empty otherwise).
        row: Vec<f32>,
    },
}

#[derive(Clone, Copy)]
enum PairKind {
    GraphCut(f64),
    DispSum,
    DispMin,
}

/// A set function bound to its kernel(s), with the memoised statistics of the
/// current set. Candidates are `0..n()`.
pub struct Problem<'a> {
    kernel: Option<KernelData<'a>>,
    state: State,
    quality: Option<(Vec<f32>, f64)>,
    n: usize,
    /// `0..n_cols`, reused for on-the-fly row blocks.
    all_cols: Vec<usize>,
}

/// Extra inputs some functions need.
#[derive(Default)]
pub struct Extras<'a> {
    /// FLMI: pool x query kernel, `(n, q)`.
    pub query: Option<KernelData<'a>>,
    /// FLCG: pool x private kernel, `(n, p)`.
    pub private: Option<KernelData<'a>>,
    /// Modular scores `(n,)` and their weight (top-k, mix).
    pub quality: Option<(Vec<f32>, f64)>,
}

pub(crate) fn check_finite_nonneg_dense(
    k: &ndarray::ArrayView2<'_, f32>,
    what: &str,
    max_one: bool,
) -> CoreResult<()> {
    // One fused, vectorised pass over the rows in parallel; only a bad row is
    // searched again for the exact position.
    let bad_value = |v: f32| !(v >= 0.0 && v <= if max_one { 1.0 } else { f32::MAX });
    let hi = if max_one { 1.0 } else { f32::MAX };
    let found = (0..k.nrows()).into_par_iter().find_first(|&i| {
        let row = k.row(i);
        match row.as_slice() {
            Some(r) => any_outside(r, hi),
            None => row.iter().any(|&v| bad_value(v)),
        }
    });
    if let Some(a) = found {
        let (b, v) = k
            .row(a)
            .iter()
            .enumerate()
            .find(|(_, v)| bad_value(**v))
            .map_or((0, f32::NAN), |(b, v)| (b, *v));
        let need = if max_one {
            "finite values in [0, 1]"
        } else {
            "finite, non-negative similarities (shift or clip them, e.g. (1 + cos) / 2)"
        };
        let what_is = if v.is_finite() {
            format!("= {v}")
        } else {
            format!("is {v} (NaN or inf)")
        };
        return Err(CoreError::Value(format!(
            "{what}[{a}, {b}] {what_is}; this function needs {need}"
        )));
    }
    Ok(())
}

impl<'a> Problem<'a> {
    /// Bind `func` to `kernel` (`(n, m)`; square where the function needs it)
    /// and the extras; validates shapes and values.
    pub fn new(
        func: &SetFunction,
        kernel: Option<KernelData<'a>>,
        extras: Extras<'a>,
    ) -> CoreResult<Self> {
        let needs_kernel = !matches!(func, SetFunction::Modular);
        let kernel = if needs_kernel {
            Some(kernel.ok_or_else(|| {
                CoreError::Value(format!("{} needs a similarity kernel", func.name()))
            })?)
        } else {
            None
        };
        let n = match (&kernel, &extras.quality) {
            (Some(k), _) => k.n_rows(),
            (None, Some((s, _))) => s.len(),
            (None, None) => return Err(CoreError::Value("top-k needs scores".into())),
        };
        if n == 0 {
            return Err(CoreError::Shape("the pool is empty".into()));
        }
        if let Some((s, w)) = &extras.quality {
            if s.len() != n {
                return Err(CoreError::Shape(format!(
                    "scores have length {}, the pool has {n} items",
                    s.len()
                )));
            }
            if let Some(i) = s.iter().position(|v| !v.is_finite()) {
                return Err(CoreError::Value(format!("scores[{i}] is NaN or inf")));
            }
            if !w.is_finite() {
                return Err(CoreError::Value("quality weight must be finite".into()));
            }
        }
        let square_needed = matches!(
            func,
            SetFunction::Flmi { .. }
                | SetFunction::Flcg { .. }
                | SetFunction::GraphCut { .. }
                | SetFunction::DisparitySum
                | SetFunction::DisparityMin
        );
        if let Some(k) = &kernel {
            if square_needed && k.n_cols() != n {
                return Err(CoreError::Shape(format!(
                    "{} needs a square pool x pool kernel, got ({n}, {})",
                    func.name(),
                    k.n_cols()
                )));
            }
            let max_one = matches!(func, SetFunction::DisparitySum | SetFunction::DisparityMin);
            match k {
                KernelData::Dense(a) => check_finite_nonneg_dense(a, "kernel", max_one)?,
                KernelData::Sparse(s) => {
                    for j in 0..s.n_rows() {
                        let (_, v) = s.row(j);
                        if let Some(x) = v
                            .iter()
                            .find(|x| !x.is_finite() || **x < 0.0 || (max_one && **x > 1.0))
                        {
                            return Err(CoreError::Value(format!(
                                "sparse kernel row {j} holds {x}; this function needs finite, non-negative similarities{}",
                                if max_one { " in [0, 1]" } else { "" }
                            )));
                        }
                    }
                }
                // On-the-fly values are checked as they are produced.
                KernelData::Source(_) => {}
            }
        }
        let m = kernel.as_ref().map_or(0, |k| k.n_cols());
        let state = match func {
            SetFunction::Modular => State::None,
            SetFunction::FacilityLocation => State::Fl {
                best: vec![0.0; m],
                cap: None,
            },
            SetFunction::Flmi { eta } => {
                let q = extras.query.ok_or_else(|| {
                    CoreError::Value("flmi needs a query kernel or query embeddings".into())
                })?;
                if q.n_rows() != n {
                    return Err(CoreError::Shape(format!(
                        "query kernel has {} rows, the pool has {n} items",
                        q.n_rows()
                    )));
                }
                if q.n_cols() == 0 {
                    return Err(CoreError::Shape("the query set is empty".into()));
                }
                if !eta.is_finite() || *eta < 0.0 {
                    return Err(CoreError::Value(format!(
                        "eta must be finite and >= 0, got {eta}"
                    )));
                }
                if let KernelData::Dense(a) = &q {
                    check_finite_nonneg_dense(a, "query_kernel", false)?;
                }
                // submodlib scales the query kernel by eta, then takes the row
                // max starting from FLT_MIN; the same bits here.
                let cap = q
                    .row_max()?
                    .into_iter()
                    .map(|v| (eta * v).max(f32::MIN_POSITIVE))
                    .collect();
                State::Fl {
                    best: vec![0.0; m],
                    cap: Some(cap),
                }
            }
            SetFunction::Flcg { nu } => {
                let p = extras.private.ok_or_else(|| {
                    CoreError::Value("flcg needs a private kernel or private embeddings".into())
                })?;
                if p.n_rows() != n {
                    return Err(CoreError::Shape(format!(
                        "private kernel has {} rows, the pool has {n} items",
                        p.n_rows()
                    )));
                }
                if p.n_cols() == 0 {
                    return Err(CoreError::Shape("the private set is empty".into()));
                }
                if !nu.is_finite() || *nu < 0.0 {
                    return Err(CoreError::Value(format!(
                        "nu must be finite and >= 0, got {nu}"
                    )));
                }
                if let KernelData::Dense(a) = &p {
                    check_finite_nonneg_dense(a, "private_kernel", false)?;
                }
                let best = p
                    .row_max()?
                    .into_iter()
                    .map(|v| (nu * v).max(0.0))
                    .collect();
                State::Fl { best, cap: None }
            }
            SetFunction::GraphCut { .. }
            | SetFunction::DisparitySum
            | SetFunction::DisparityMin => {
                let k = kernel
                    .as_ref()
                    .ok_or_else(|| CoreError::Value("kernel missing".into()))?;
                let kind = match func {
                    SetFunction::GraphCut { lambda } => {
                        if !lambda.is_finite() || *lambda < 0.0 {
                            return Err(CoreError::Value(format!(
                                "lambda must be finite and >= 0, got {lambda}"
                            )));
                        }
                        PairKind::GraphCut(f64::from(*lambda))
                    }
                    SetFunction::DisparitySum => PairKind::DispSum,
                    _ => PairKind::DispMin,
                };
                let (rowsum, diag) = match kind {
                    PairKind::GraphCut(_) => row_sums_and_diag(k)?,
                    _ => (Vec::new(), Vec::new()),
                };
                State::Pairwise {
                    kind,
                    rowsum,
                    acc: vec![0.0; n],
                    mind: vec![1.0; n],
                    diag,
                    count: 0,
                    current_min: 0.0,
                    col: vec![0.0; n],
                    row: match kind {
                        PairKind::GraphCut(_) => vec![0.0; n],
                        _ => Vec::new(),
                    },
                }
            }
        };
        Ok(Self {
            kernel,
            state,
            quality: extras.quality,
            n,
            all_cols: (0..m).collect(),
        })
    }

    /// Number of candidates.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether this is the modular (top-k) function: its gains are the scores
    /// themselves, so a gain of 0 or below is a value, never a reason to stop.
    pub fn is_modular(&self) -> bool {
        matches!(self.state, State::None)
    }

    /// Rows fetched per on-the-fly block (bounded working memory).
    fn source_chunk(&self) -> usize {
        (2_000_000 / self.all_cols.len().max(1)).clamp(1, 256)
    }

    /// Marginal gains of `cands` with respect to the current set, into `out`.
    /// Runs in parallel in the current rayon pool; each gain is computed by one
    /// thread in a fixed order, so the bits do not depend on the thread count.
    pub fn gains(&self, cands: &[usize], out: &mut [f64]) -> CoreResult<()> {
        debug_assert_eq!(cands.len(), out.len());
        let chunk = match &self.kernel {
            Some(KernelData::Source(_)) => self.source_chunk(),
            // A dense row of >= 4k columns is worth a task of its own: lazy
            // greedy re-evaluates a handful of rows at a time, and splitting
            // those across threads is what keeps both cores busy.
            Some(KernelData::Dense(a)) => {
                let per = (262_144 / a.ncols().max(1)).clamp(1, 64);
                let threads = rayon::current_num_threads().max(1);
                if a.ncols() >= 4096 && threads > 1 {
                    per.min(cands.len().div_ceil(threads)).max(1)
                } else {
                    per
                }
            }
            _ => 512,
        };
        if cands.len() <= chunk {
            self.gains_chunk(cands, out)?;
        } else {
            out.par_chunks_mut(chunk)
                .zip(cands.par_chunks(chunk))
                .try_for_each(|(o, c)| self.gains_chunk(c, o))?;
        }
        if let Some((s, w)) = &self.quality {
            for (o, &j) in out.iter_mut().zip(cands) {
                *o += w * f64::from(s[j]);
            }
        }
        Ok(())
    }

    fn gains_chunk(&self, cands: &[usize], out: &mut [f64]) -> CoreResult<()> {
        match &self.state {
            State::None => out.fill(0.0),
            State::Fl { best, cap } => {
                let kernel = self
                    .kernel
                    .as_ref()
                    .ok_or_else(|| CoreError::Runtime("kernel missing".into()))?;
                match kernel {
                    KernelData::Dense(a) => {
                        for (o, &j) in out.iter_mut().zip(cands) {
                            let row = a.row(j);
                            let row = row.as_slice().ok_or_else(|| {
                                CoreError::Runtime("kernel must be C-contiguous".into())
                            })?;
                            *o = match cap {
                                None => fl_gain(row, best),
                                Some(c) => flmi_gain(row, best, c),
                            };
                        }
                    }
                    KernelData::Sparse(s) => {
                        for (o, &j) in out.iter_mut().zip(cands) {
                            let (idx, val) = s.row(j);
                            *o = sparse_gain(idx, val, best, cap.as_deref());
                        }
                    }
                    KernelData::Source(src) => {
                        let m = self.all_cols.len();
                        let mut buf = vec![0f32; cands.len() * m];
                        src.block(cands, &self.all_cols, &mut buf)?;
                        for (o, (line, &j)) in out.iter_mut().zip(buf.chunks(m).zip(cands)) {
                            if let Some(p) = line.iter().position(|v| !v.is_finite() || *v < 0.0) {
                                return Err(CoreError::Value(format!(
                                    "kernel entry ({j}, {p}) = {}; this function needs finite, non-negative similarities",
                                    line[p]
                                )));
                            }
                            *o = match cap {
                                None => fl_gain(line, best),
                                Some(c) => flmi_gain(line, best, c),
                            };
                        }
                    }
                }
            }
            State::Pairwise {
                kind,
                rowsum,
                acc,
                mind,
                diag,
                ..
            } => {
                for (o, &j) in out.iter_mut().zip(cands) {
                    *o = match kind {
                        PairKind::GraphCut(l) => rowsum[j] - l * acc[j] - l * f64::from(diag[j]),
                        PairKind::DispSum => acc[j],
                        PairKind::DispMin => f64::from(mind[j]),
                    };
                }
            }
        }
        Ok(())
    }

    /// Add candidate `j` to the set, updating the memoised statistics.
    pub fn insert(&mut self, j: usize) -> CoreResult<()> {
        let kernel = self.kernel.as_ref();
        match &mut self.state {
            State::None => {}
            State::Fl { best, .. } => {
                let kernel = kernel.ok_or_else(|| CoreError::Runtime("kernel missing".into()))?;
                match kernel {
                    KernelData::Dense(a) => {
                        let row = a.row(j);
                        let r = row.as_slice().ok_or_else(|| {
                            CoreError::Runtime("kernel must be C-contiguous".into())
                        })?;
                        max_into(best, r);
                    }
                    KernelData::Sparse(s) => {
                        let (idx, val) = s.row(j);
                        for (&t, &v) in idx.iter().zip(val) {
                            let b = &mut best[t as usize];
                            *b = b.max(v);
                        }
                    }
                    KernelData::Source(src) => {
                        let mut buf = vec![0f32; self.all_cols.len()];
                        src.block(&[j], &self.all_cols, &mut buf)?;
                        for (b, &v) in best.iter_mut().zip(&buf) {
                            *b = b.max(v);
                        }
                    }
                }
            }
            State::Pairwise {
                kind,
                acc,
                mind,
                count,
                current_min,
                col,
                row,
                ..
            } => {
                let kernel = kernel.ok_or_else(|| CoreError::Runtime("kernel missing".into()))?;
                kernel.column(j, col)?;
                if let Some(p) = col.iter().position(|v| !v.is_finite() || *v < 0.0) {
                    return Err(CoreError::Value(format!(
                        "kernel entry ({p}, {j}) = {} is negative or not finite",
                        col[p]
                    )));
                }
                match kind {
                    PairKind::GraphCut(_) => {
                        // The pair term sum_{i, j in A} K[i, j] counts both K[c, j] and
                        // K[j, c]. Doubling K[c, j] alone (as before) was right only for a
                        // symmetric kernel: on an InfluenceNetwork's kernel (or a kNN one)
                        // the gains and the reported objective depended on the pick order.
                        // For a symmetric kernel v + v == 2 v exactly: results are unchanged.
                        kernel.row(j, row)?;
                        if let Some(p) = row.iter().position(|v| !v.is_finite() || *v < 0.0) {
                            return Err(CoreError::Value(format!(
                                "kernel entry ({j}, {p}) = {} is negative or not finite",
                                row[p]
                            )));
                        }
                        for ((a, &v), &w) in acc.iter_mut().zip(col.iter()).zip(row.iter()) {
                            *a += f64::from(v) + f64::from(w);
                        }
                    }
                    PairKind::DispSum => {
                        for (a, &v) in acc.iter_mut().zip(col.iter()) {
                            *a += f64::from(1.0 - v);
                        }
                    }
                    PairKind::DispMin => {
                        if *count >= 1 {
                            let d = f64::from(mind[j]);
                            *current_min = if *count == 1 { d } else { current_min.min(d) };
                        }
                        for (m, &v) in mind.iter_mut().zip(col.iter()) {
                            *m = m.min(1.0 - v);
                        }
                    }
                }
                *count += 1;
            }
        }
        Ok(())
    }

    /// For disparity-min, the objective is the running minimum pairwise
    /// distance, not the sum of gains.
    pub fn objective_override(&self) -> Option<f64> {
        match &self.state {
            State::Pairwise {
                kind: PairKind::DispMin,
                current_min,
                count,
                ..
            } => Some(if *count < 2 { 0.0 } else { *current_min }),
            _ => None,
        }
    }

    /// The modular weight times score of `j` (for the disparity-min objective).
    pub fn quality_of(&self, j: usize) -> f64 {
        self.quality
            .as_ref()
            .map_or(0.0, |(s, w)| w * f64::from(s[j]))
    }

    /// The kernel's storage kind, for reports.
    pub fn mode_name(&self) -> &'static str {
        self.kernel.as_ref().map_or("none", |k| k.mode_name())
    }
}

fn row_sums_and_diag(k: &KernelData<'_>) -> CoreResult<(Vec<f64>, Vec<f32>)> {
    let n = k.n_rows();
    match k {
        KernelData::Dense(a) => {
            let sums = (0..n)
                .into_par_iter()
                .map(|j| a.row(j).iter().map(|&v| f64::from(v)).sum())
                .collect();
            let diag = (0..n).map(|j| a[[j, j]]).collect();
            Ok((sums, diag))
        }
        KernelData::Sparse(s) => {
            let sums = (0..n)
                .map(|j| s.row(j).1.iter().map(|&v| f64::from(v)).sum())
                .collect();
            let diag = (0..n).map(|j| s.get(j, j)).collect();
            Ok((sums, diag))
        }
        KernelData::Source(src) => {
            let m = src.n_cols();
            let cols: Vec<usize> = (0..m).collect();
            let chunk = (2_000_000 / m.max(1)).clamp(1, 1024);
            let rows: Vec<usize> = (0..n).collect();
            let parts: CoreResult<Vec<(Vec<f64>, Vec<f32>)>> = rows
                .par_chunks(chunk)
                .map(|r| {
                    let mut buf = vec![0f32; r.len() * m];
                    src.block(r, &cols, &mut buf)?;
                    let sums = buf
                        .chunks(m)
                        .map(|l| l.iter().map(|&v| f64::from(v)).sum())
                        .collect();
                    let diag = r.iter().enumerate().map(|(a, &j)| buf[a * m + j]).collect();
                    Ok((sums, diag))
                })
                .collect();
            let mut sums = Vec::with_capacity(n);
            let mut diag = Vec::with_capacity(n);
            for (s, d) in parts? {
                sums.extend(s);
                diag.extend(d);
            }
            Ok((sums, diag))
        }
    }
}

#[inline]
fn sparse_gain(idx: &[u32], val: &[f32], best: &[f32], cap: Option<&[f32]>) -> f64 {
    let mut g = 0f64;
    match cap {
        None => {
            for (&t, &v) in idx.iter().zip(val) {
                g += f64::from((v - best[t as usize]).max(0.0));
            }
        }
        Some(c) => {
            for (&t, &v) in idx.iter().zip(val) {
                let (b, q) = (best[t as usize], c[t as usize]);
                g += f64::from(b.max(v).min(q) - b.min(q));
            }
        }
    }
    g
}
