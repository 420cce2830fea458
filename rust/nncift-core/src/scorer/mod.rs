//! Batched InfluenceNetwork scoring from exported weights (docs/weights.md).
//!
//! The first layer factorises exactly: with `W_0 = [W_a | w_sep | W_b | w_cos]`,
//! `W_0 x + b_0 = (W_a e_i + b_0) + W_b e_j + w_cos cos(e_i, e_j)`. A [`Scorer`] holds the
//! validated weights; [`Scorer::bind`] computes `P = E_rows W_a^T + b_0` `(M, h)` and
//! `Q = E_cols W_b^T` `(N, h)` once with a gemm, and the resulting [`BoundScorer`] evaluates
//! any block of pairs: a one-hidden-layer network through the fused register-blocked kernel
//! (`w . relu(P_i + Q_j) + b`, O(h) per pair), deeper ones by finishing the first layer per
//! tile and running the remaining layers as small matrix products.
//!
//! The extra terms of docs/weights.md are added per tile: the output cosine `c cos(e_i, e_j)`
//! and the cosine feature from a gemm of L2-normalised embeddings, the bilinear term
//! `(U e_i) . (V e_j)` from a gemm of the precomputed `U e_i` and `V e_j`. Then
//! `value = raw * label_scale + label_offset`.
//!
//! Determinism: every pair's value is computed by the same arithmetic in the same order
//! whatever the tile, the block request or the thread count, so dense, top-k, aggregate and
//! [`PairwiseSource::block`] agree bit for bit, for any `n_jobs`.

pub mod kernel;
pub mod memory;
pub mod weights;

use std::collections::BinaryHeap;
use std::sync::Arc;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;
use kernel::{fused_tile, pack_blocks, FusedTile, Isa};
pub use memory::{available_memory, check_dense_fits};
pub use weights::{Kind, Layout, NetworkMeta, NetworkWeights};

/// Rows per parallel work item in dense / top-k / aggregate mode (a multiple of every MR).
const ROW_CHUNK: usize = 64;
/// Columns per tile: a packed `Q` tile of `TILE_COLS x h` floats stays in L2.
const TILE_COLS: usize = 512;
/// Rows per gemm when computing `P`, `Q` and pointwise scores. Fixed (not derived from the
/// thread count) so that the arithmetic never depends on `n_jobs`.
const GEMM_ROWS: usize = 256;
/// Pairs per activation matrix in the deep-network path.
const DEEP_COLS: usize = 128;
/// `cos = a.b / (max(|a|, eps) max(|b|, eps))`, the clamp `nncift.network` trains with (a zero
/// embedding has cosine 0 with everything).
pub const COSINE_EPS: f32 = 1e-12;

/// How [`BoundScorer::aggregate`] reduces each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Mean over all columns.
    Mean,
    /// Maximum over all columns.
    Max,
    /// Mean over the columns of each group, then the maximum over groups (LESS).
    MeanMax,
}

impl Aggregate {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "mean" => Ok(Aggregate::Mean),
            "max" => Ok(Aggregate::Max),
            "mean-max" | "mean_max" => Ok(Aggregate::MeanMax),
            _ => Err(CoreError::Value(format!(
                "aggregate must be 'mean', 'max' or 'mean-max', got {s:?}"
            ))),
        }
    }
}

/// The validated weights, rearranged once for scoring. Build with [`Scorer::new`].
#[derive(Debug)]
pub struct Scorer {
    net: NetworkWeights,
    isa: Isa,
    /// `W_a^T` `(d, h_0)`: the row half of the first layer (the whole of it for pointwise).
    wa_t: Array2<f32>,
    /// `W_b^T` `(d, h_0)`: the column half (pairwise only).
    wb_t: Option<Array2<f32>>,
    b0: Array1<f32>,
    /// `(h_0,)` first-layer weights of the cosine feature.
    wcos: Option<Vec<f32>>,
    /// Layers `1..L` as `(W_k^T (in, out), b_k)`.
    rest_t: Vec<(Array2<f32>, Array1<f32>)>,
    /// `U^T`, `V^T` `(d, r)`.
    bil_t: Option<(Array2<f32>, Array2<f32>)>,
    scale: f32,
    offset: f32,
}

impl Scorer {
    /// Prepare a scorer from validated weights.
    pub fn new(net: NetworkWeights) -> Self {
        Self::with_isa(net, Isa::detect())
    }

    /// As [`Scorer::new`] with a given instruction set (tests compare the kernels). A
    /// requested ISA the CPU lacks falls back to the detected one.
    pub fn with_isa(net: NetworkWeights, isa: Isa) -> Self {
        let best = Isa::detect();
        let isa = match (isa, best) {
            (Isa::Avx512, Isa::Avx512) => Isa::Avx512,
            (Isa::Avx2, Isa::Avx512 | Isa::Avx2) => Isa::Avx2,
            (Isa::Generic, _) => Isa::Generic,
            _ => best,
        };
        let d = net.embedding_dim;
        let (w0, b0) = (&net.layers[0].0, &net.layers[0].1);
        let wa_t = w0.slice(s![.., 0..d]).t().to_owned();
        let (wb_t, wcos) = match net.layout {
            Layout::Pointwise => (None, None),
            layout => {
                let start = if layout == Layout::Paper { d + 1 } else { d };
                let wb = w0.slice(s![.., start..start + d]).t().to_owned();
                let wc = net.cosine_feature.then(|| w0.column(start + d).to_vec());
                (Some(wb), wc)
            }
        };
        let rest_t = net.layers[1..]
            .iter()
            .map(|(w, b)| (w.t().to_owned(), b.clone()))
            .collect();
        let bil_t = net
            .bilinear
            .as_ref()
            .map(|(u, v)| (u.t().to_owned(), v.t().to_owned()));
        Scorer {
            isa,
            wa_t,
            wb_t,
            b0: b0.clone(),
            wcos,
            rest_t,
            bil_t,
            scale: net.label_scale as f32,
            offset: net.label_offset as f32,
            net,
        }
    }

    /// The validated weights and metadata.
    pub fn network(&self) -> &NetworkWeights {
        &self.net
    }

    /// The instruction set of the pair kernel.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn needs_cos(&self) -> bool {
        self.wcos.is_some() || self.net.cosine_weight.is_some()
    }

    fn fused(&self) -> bool {
        self.net.layers.len() == 2
    }

    fn hidden(&self) -> usize {
        self.b0.len()
    }

    fn check_embeddings(&self, name: &str, e: &ArrayView2<'_, f32>) -> CoreResult<()> {
        let d = self.net.embedding_dim;
        if e.nrows() == 0 {
            return Err(CoreError::Value(format!("{name} is empty (0 rows)")));
        }
        if e.ncols() != d {
            return Err(CoreError::Shape(format!(
                "{name} has {} columns but the network was trained on {d}-dimensional \
                 embeddings ({})",
                e.ncols(),
                self.net.embedding_model
            )));
        }
        let bad = e
            .axis_chunks_iter(Axis(0), GEMM_ROWS)
            .into_par_iter()
            .enumerate()
            .find_map_first(|(ci, chunk)| {
                chunk
                    .outer_iter()
                    .position(|row| row.iter().any(|v| !v.is_finite()))
                    .map(|r| ci * GEMM_ROWS + r)
            });
        if let Some(r) = bad {
            return Err(CoreError::Value(format!(
                "{name} contains NaN or infinite values (first in row {r})"
            )));
        }
        Ok(())
    }

    /// `E W^T (+ b)` in fixed chunks of rows, `(n, out)`.
    fn project(
        e: &ArrayView2<'_, f32>,
        w_t: &Array2<f32>,
        bias: Option<&Array1<f32>>,
    ) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((e.nrows(), w_t.ncols()));
        out.axis_chunks_iter_mut(Axis(0), GEMM_ROWS)
            .into_par_iter()
            .zip(e.axis_chunks_iter(Axis(0), GEMM_ROWS))
            .for_each(|(mut o, x)| {
                general_mat_mul(1.0, &x, w_t, 0.0, &mut o);
                if let Some(b) = bias {
                    o += b;
                }
            });
        out
    }

    /// Row-wise `e / max(|e|, eps)`.
    fn normalise(e: &ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = e.to_owned();
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .for_each(|mut row| {
                let norm = row
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt()
                    .max(COSINE_EPS);
                row.mapv_inplace(|v| v / norm);
            });
        out
    }

    /// Precompute everything per item for scoring `rows x cols` and return the bound
    /// scorer (a [`PairwiseSource`]). `rows`: `(M, d)`, `cols`: `(N, d)`, finite float32.
    pub fn bind(
        self: &Arc<Self>,
        rows: ArrayView2<'_, f32>,
        cols: ArrayView2<'_, f32>,
        n_jobs: usize,
    ) -> CoreResult<BoundScorer> {
        if self.net.kind != Kind::Pairwise {
            return Err(CoreError::Value(
                "this is a pointwise network: use pointwise scores, not pairwise ones".into(),
            ));
        }
        let pool = crate::thread_pool(n_jobs)?;
        pool.install(|| {
            self.check_embeddings("rows", &rows)?;
            self.check_embeddings("cols", &cols)?;
            let deep_or_linear = !self.fused();
            // With a single (linear) layer b_0 is the output bias and is added at the end.
            let bias = (self.net.layers.len() > 1).then_some(&self.b0);
            let p = Self::project(&rows, &self.wa_t, bias);
            let wb_t = self.wb_t.as_ref().ok_or_else(|| {
                CoreError::Runtime("pairwise network without a column half".into())
            })?;
            let q = Self::project(&cols, wb_t, None);
            let (mr, nr) = self.isa.block_shape(self.wcos.is_some());
            let h = self.hidden();
            let (mut pp, mut qp) = (Vec::new(), Vec::new());
            if self.fused() {
                pack_blocks(
                    p.nrows(),
                    h,
                    mr,
                    |i| p.row(i).to_slice().unwrap_or(&[]),
                    &mut pp,
                );
                pack_blocks(
                    q.nrows(),
                    h,
                    nr,
                    |j| q.row(j).to_slice().unwrap_or(&[]),
                    &mut qp,
                );
            }
            let (rows_hat, cols_hat) = if self.needs_cos() {
                (Some(Self::normalise(&rows)), Some(Self::normalise(&cols)))
            } else {
                (None, None)
            };
            let (ue, ve) = match &self.bil_t {
                Some((ut, vt)) => (
                    Some(Self::project(&rows, ut, None)),
                    Some(Self::project(&cols, vt, None)),
                ),
                None => (None, None),
            };
            Ok(BoundScorer {
                scorer: Arc::clone(self),
                m: rows.nrows(),
                n: cols.nrows(),
                mr,
                nr,
                p: deep_or_linear.then_some(p),
                q: deep_or_linear.then_some(q),
                pp,
                qp,
                rows_hat,
                cols_hat,
                ue,
                ve,
            })
        })
    }

    /// Pointwise scores `(M,)` of a pointwise network for `rows` `(M, d)`.
    pub fn pointwise(&self, rows: ArrayView2<'_, f32>, n_jobs: usize) -> CoreResult<Array1<f32>> {
        if self.net.kind != Kind::Pointwise {
            return Err(CoreError::Value(
                "this is a pairwise network: use pairwise scores (score / topk / aggregate), \
                 not pointwise"
                    .into(),
            ));
        }
        let pool = crate::thread_pool(n_jobs)?;
        pool.install(|| {
            self.check_embeddings("rows", &rows)?;
            let mut out = Array1::<f32>::zeros(rows.nrows());
            out.axis_chunks_iter_mut(Axis(0), GEMM_ROWS)
                .into_par_iter()
                .zip(rows.axis_chunks_iter(Axis(0), GEMM_ROWS))
                .for_each(|(mut o, x)| {
                    let mut a = x.dot(&self.wa_t);
                    a += &self.b0;
                    for (w_t, b) in &self.rest_t {
                        a.mapv_inplace(|v| if v > 0.0 { v } else { 0.0 });
                        let mut next = a.dot(w_t);
                        next += b;
                        a = next;
                    }
                    for (dst, v) in o.iter_mut().zip(a.column(0)) {
                        *dst = v * self.scale + self.offset;
                    }
                });
            Ok(out)
        })
    }

    /// Dense `(M, N)` scores, refused before allocating if they cannot fit in memory.
    pub fn score(
        self: &Arc<Self>,
        rows: ArrayView2<'_, f32>,
        cols: ArrayView2<'_, f32>,
        n_jobs: usize,
    ) -> CoreResult<Array2<f32>> {
        check_dense_fits(rows.nrows(), cols.nrows())?;
        let bound = self.bind(rows, cols, n_jobs)?;
        bound.dense(n_jobs)
    }
}

/// A selection of bound rows or columns: an aligned range (no packing needed) or indices.
#[derive(Clone, Copy)]
enum Sel<'a> {
    Range(usize, usize),
    Idx(&'a [usize]),
}

impl Sel<'_> {
    fn len(&self) -> usize {
        match self {
            Sel::Range(_, n) => *n,
            Sel::Idx(ix) => ix.len(),
        }
    }
    fn get(&self, a: usize) -> usize {
        match self {
            Sel::Range(s, _) => s + a,
            Sel::Idx(ix) => ix[a],
        }
    }
    /// `Some(start)` for a contiguous run of indices.
    fn contiguous(&self) -> Option<usize> {
        match self {
            Sel::Range(s, _) => Some(*s),
            Sel::Idx(ix) => {
                let s = *ix.first()?;
                ix.iter().enumerate().all(|(a, &i)| i == s + a).then_some(s)
            }
        }
    }
}

/// Per-worker buffers, reused across tiles.
#[derive(Default)]
struct Scratch {
    pp: Vec<f32>,
    qp: Vec<f32>,
    cos: Vec<f32>,
    bil: Vec<f32>,
    act: Vec<f32>,
    act2: Vec<f32>,
}

/// A scorer bound to row embeddings `(M, d)` and column embeddings `(N, d)`: the virtual
/// matrix `K[i, j] = f(e_i, e_j)` with `P`, `Q` (and the cosine / bilinear factors)
/// precomputed. Thread-safe and cheap to share (`Arc`).
pub struct BoundScorer {
    scorer: Arc<Scorer>,
    m: usize,
    n: usize,
    mr: usize,
    nr: usize,
    /// `P` `(M, h_0)` and `Q` `(N, h_0)`, kept for the deep and linear paths.
    p: Option<Array2<f32>>,
    q: Option<Array2<f32>>,
    /// Packed `P` / `Q` for the fused kernel.
    pp: Vec<f32>,
    qp: Vec<f32>,
    rows_hat: Option<Array2<f32>>,
    cols_hat: Option<Array2<f32>>,
    ue: Option<Array2<f32>>,
    ve: Option<Array2<f32>>,
}

impl std::fmt::Debug for BoundScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundScorer")
            .field("rows", &self.m)
            .field("cols", &self.n)
            .field("isa", &self.scorer.isa)
            .finish()
    }
}

/// `a (na, k) . b (nb, k)^T` into `out` `(na, nb)`.
fn gemm_abt(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, out: &mut Vec<f32>) {
    out.clear();
    out.resize(a.nrows() * b.nrows(), 0.0);
    if let Ok(mut o) = ArrayViewMut2::from_shape((a.nrows(), b.nrows()), &mut out[..]) {
        general_mat_mul(1.0, &a, &b.t(), 0.0, &mut o);
    }
}

/// The rows `sel` of `x` as a view (contiguous selection) or a gathered copy.
fn rows_of<'x>(x: &'x Array2<f32>, sel: Sel<'_>) -> ndarray::CowArray<'x, f32, ndarray::Ix2> {
    match sel.contiguous() {
        Some(s) => x.slice(s![s..s + sel.len(), ..]).into(),
        None => {
            let idx: Vec<usize> = (0..sel.len()).map(|a| sel.get(a)).collect();
            x.select(Axis(0), &idx).into()
        }
    }
}

impl BoundScorer {
    /// The scorer this was bound from.
    pub fn scorer(&self) -> &Arc<Scorer> {
        &self.scorer
    }

    /// Packed blocks for `sel` out of the bound pack `src` (block size `b`), borrowing a
    /// slice when the selection starts on a block boundary, gathering otherwise.
    fn packed<'s>(
        &'s self,
        src: &'s [f32],
        sel: Sel<'_>,
        b: usize,
        buf: &'s mut Vec<f32>,
    ) -> &'s [f32] {
        let h = self.scorer.hidden();
        if let Some(s) = sel.contiguous() {
            if s % b == 0 {
                let nb = sel.len().div_ceil(b);
                return &src[s / b * h * b..(s / b + nb) * h * b];
            }
        }
        let nb = sel.len().div_ceil(b);
        buf.clear();
        buf.resize(nb * h * b, 0.0);
        for a in 0..sel.len() {
            let i = sel.get(a);
            let (sb, sr) = (i / b, i % b);
            let (db, dr) = (a / b, a % b);
            for k in 0..h {
                buf[db * h * b + k * b + dr] = src[sb * h * b + k * b + sr];
            }
        }
        buf
    }

    /// Compute `K[rows, cols]` into `out[r * stride + c]`.
    fn tile(&self, rows: Sel<'_>, cols: Sel<'_>, out: &mut [f32], stride: usize, sc: &mut Scratch) {
        let s = &*self.scorer;
        let (nr_, nc) = (rows.len(), cols.len());
        if nr_ == 0 || nc == 0 {
            return;
        }
        let mut cos = std::mem::take(&mut sc.cos);
        if let (Some(rh), Some(ch)) = (&self.rows_hat, &self.cols_hat) {
            gemm_abt(rows_of(rh, rows).view(), rows_of(ch, cols).view(), &mut cos);
        }
        let mut bil = std::mem::take(&mut sc.bil);
        if let (Some(ue), Some(ve)) = (&self.ue, &self.ve) {
            gemm_abt(rows_of(ue, rows).view(), rows_of(ve, cols).view(), &mut bil);
        }
        let cos_opt = self.rows_hat.is_some().then_some(&cos[..]);
        if s.fused() {
            let mut pbuf = std::mem::take(&mut sc.pp);
            let mut qbuf = std::mem::take(&mut sc.qp);
            {
                let pp = self.packed(&self.pp, rows, self.mr, &mut pbuf);
                let qp = self.packed(&self.qp, cols, self.nr, &mut qbuf);
                let w = s.net.layers[1].0.as_slice().unwrap_or(&[]);
                let t = FusedTile {
                    h: s.hidden(),
                    w,
                    wcos: s.wcos.as_deref(),
                    pp,
                    qp,
                    n_rows: nr_,
                    n_cols: nc,
                    cos: s.wcos.as_ref().and(cos_opt),
                };
                fused_tile(s.isa, &t, out, stride);
            }
            sc.pp = pbuf;
            sc.qp = qbuf;
        } else {
            self.tile_general(rows, cols, cos_opt, out, stride, sc);
        }
        // Output bias, cosine and bilinear terms, label scaling: same order for every pair.
        let b_last = s.net.layers[s.net.layers.len() - 1].1[0];
        let c_out = s.net.cosine_weight;
        for r in 0..nr_ {
            let row = &mut out[r * stride..r * stride + nc];
            for (c, v) in row.iter_mut().enumerate() {
                let mut raw = *v + b_last;
                if let Some(cw) = c_out {
                    raw += cw * cos[r * nc + c];
                }
                if self.ue.is_some() {
                    raw += bil[r * nc + c];
                }
                *v = raw * s.scale + s.offset;
            }
        }
        sc.cos = cos;
        sc.bil = bil;
    }

    /// Linear (1 layer) and deep (3-5 layers) networks: finish the first layer per pair, then
    /// run the remaining layers as matrix products over up to `DEEP_COLS` pairs at a time.
    fn tile_general(
        &self,
        rows: Sel<'_>,
        cols: Sel<'_>,
        cos: Option<&[f32]>,
        out: &mut [f32],
        stride: usize,
        sc: &mut Scratch,
    ) {
        let s = &*self.scorer;
        let (Some(p), Some(q)) = (&self.p, &self.q) else {
            return;
        };
        let nc = cols.len();
        let h = s.hidden();
        let wcos = s.wcos.as_deref();
        if s.rest_t.is_empty() {
            // Linear network: P, Q are (., 1) and there is no ReLU.
            for r in 0..rows.len() {
                let pi = p[[rows.get(r), 0]];
                for c in 0..nc {
                    let mut x = pi + q[[cols.get(c), 0]];
                    if let (Some(wc), Some(cs)) = (wcos, cos) {
                        x += wc[0] * cs[r * nc + c];
                    }
                    out[r * stride + c] = x;
                }
            }
            return;
        }
        let mut act = std::mem::take(&mut sc.act);
        let mut act2 = std::mem::take(&mut sc.act2);
        for r in 0..rows.len() {
            let pi = p.row(rows.get(r));
            for c0 in (0..nc).step_by(DEEP_COLS) {
                let w = DEEP_COLS.min(nc - c0);
                act.clear();
                act.resize(w * h, 0.0);
                for (c, a_row) in act.chunks_exact_mut(h).enumerate() {
                    let qj = q.row(cols.get(c0 + c));
                    let cs = cos.map_or(0.0, |cs| cs[r * nc + c0 + c]);
                    for (k, a) in a_row.iter_mut().enumerate() {
                        let mut x = pi[k] + qj[k];
                        if let Some(wc) = wcos {
                            x += wc[k] * cs;
                        }
                        *a = if x > 0.0 { x } else { 0.0 };
                    }
                }
                let mut width = h;
                let last = s.rest_t.len() - 1;
                for (li, (w_t, b)) in s.rest_t.iter().enumerate() {
                    let out_w = w_t.ncols();
                    act2.clear();
                    act2.resize(w * out_w, 0.0);
                    if let (Ok(a), Ok(mut o)) = (
                        ArrayView2::from_shape((w, width), &act[..]),
                        ArrayViewMut2::from_shape((w, out_w), &mut act2[..]),
                    ) {
                        general_mat_mul(1.0, &a, w_t, 0.0, &mut o);
                    }
                    if li != last {
                        for row in act2.chunks_exact_mut(out_w) {
                            for (v, bk) in row.iter_mut().zip(b.iter()) {
                                let x = *v + bk;
                                *v = if x > 0.0 { x } else { 0.0 };
                            }
                        }
                    }
                    std::mem::swap(&mut act, &mut act2);
                    width = out_w;
                }
                out[r * stride + c0..r * stride + c0 + w].copy_from_slice(&act[..w]);
            }
        }
        sc.act = act;
        sc.act2 = act2;
    }

    /// Number of bound rows `M`.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Number of bound columns `N`.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Run `f(first_row, n_rows, scratch, tile_buf)` over row chunks in parallel.
    fn for_row_chunks<T: Send>(
        &self,
        n_jobs: usize,
        f: impl Fn(usize, usize, &mut Scratch) -> T + Sync,
    ) -> CoreResult<Vec<T>> {
        let pool = crate::thread_pool(n_jobs)?;
        let n_chunks = self.m.div_ceil(ROW_CHUNK);
        Ok(pool.install(|| {
            (0..n_chunks)
                .into_par_iter()
                .map_init(Scratch::default, |sc, ci| {
                    let r0 = ci * ROW_CHUNK;
                    f(r0, ROW_CHUNK.min(self.m - r0), sc)
                })
                .collect()
        }))
    }

    /// Dense scores `(M, N)` float32, refused before allocating if they cannot fit.
    pub fn dense(&self, n_jobs: usize) -> CoreResult<Array2<f32>> {
        check_dense_fits(self.m, self.n)?;
        let mut out = Array2::<f32>::zeros((self.m, self.n));
        let slice = out
            .as_slice_mut()
            .ok_or_else(|| CoreError::Runtime("fresh array is not contiguous".into()))?;
        self.dense_into(slice, n_jobs)?;
        Ok(out)
    }

    /// Dense scores written into `out` (row-major `(M, N)`, e.g. a memory-mapped file).
    pub fn dense_into(&self, out: &mut [f32], n_jobs: usize) -> CoreResult<()> {
        let n = self.n;
        if out.len() != self.m * n {
            return Err(CoreError::Shape(format!(
                "output has {} elements, expected {} x {}",
                out.len(),
                self.m,
                n
            )));
        }
        let pool = crate::thread_pool(n_jobs)?;
        pool.install(|| {
            out.par_chunks_mut(ROW_CHUNK * n).enumerate().for_each_init(
                Scratch::default,
                |sc, (ci, chunk)| {
                    let r0 = ci * ROW_CHUNK;
                    let nr_ = chunk.len() / n;
                    for c0 in (0..n).step_by(TILE_COLS) {
                        let nc = TILE_COLS.min(n - c0);
                        self.tile(
                            Sel::Range(r0, nr_),
                            Sel::Range(c0, nc),
                            &mut chunk[c0..],
                            n,
                            sc,
                        );
                    }
                },
            )
        });
        Ok(())
    }

    /// Per-row top-`k` columns without the dense matrix: `(indices (M, k), values (M, k))`,
    /// row-major, each row sorted by descending value, ties to the lowest column index.
    pub fn topk(&self, k: usize, n_jobs: usize) -> CoreResult<(Vec<i64>, Vec<f32>)> {
        if k == 0 || k > self.n {
            return Err(CoreError::Value(format!(
                "k must be between 1 and the number of columns ({}), got {k}",
                self.n
            )));
        }
        let n = self.n;
        let parts = self.for_row_chunks(n_jobs, |r0, nr_, sc| {
            let mut heaps: Vec<BinaryHeap<Cand>> =
                (0..nr_).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
            let mut buf = vec![0f32; nr_ * TILE_COLS];
            for c0 in (0..n).step_by(TILE_COLS) {
                let nc = TILE_COLS.min(n - c0);
                self.tile(
                    Sel::Range(r0, nr_),
                    Sel::Range(c0, nc),
                    &mut buf,
                    TILE_COLS,
                    sc,
                );
                for (r, heap) in heaps.iter_mut().enumerate() {
                    for (c, &v) in buf[r * TILE_COLS..r * TILE_COLS + nc].iter().enumerate() {
                        push_topk(heap, k, v, c0 + c);
                    }
                }
            }
            let mut idx = Vec::with_capacity(nr_ * k);
            let mut val = Vec::with_capacity(nr_ * k);
            for heap in heaps {
                // `Cand`'s order puts the best first once sorted ascending.
                for cand in heap.into_sorted_vec() {
                    idx.push(cand.idx as i64);
                    val.push(cand.v);
                }
            }
            (idx, val)
        })?;
        let mut idx = Vec::with_capacity(self.m * k);
        let mut val = Vec::with_capacity(self.m * k);
        for (i, v) in parts {
            idx.extend(i);
            val.extend(v);
        }
        Ok((idx, val))
    }

    /// Per-row aggregate over columns `(M,)`. `groups` (one id in `0..n_groups` per column,
    /// every group non-empty) is required for [`Aggregate::MeanMax`] and ignored otherwise.
    /// Means are accumulated in f64, in column order.
    pub fn aggregate(
        &self,
        how: Aggregate,
        groups: Option<&[usize]>,
        n_jobs: usize,
    ) -> CoreResult<Vec<f32>> {
        let n = self.n;
        let (gid, counts): (&[usize], Vec<f64>) = match (how, groups) {
            (Aggregate::MeanMax, None) => {
                return Err(CoreError::Value(
                    "aggregate 'mean-max' needs column groups".into(),
                ))
            }
            (Aggregate::MeanMax, Some(g)) => {
                if g.len() != n {
                    return Err(CoreError::Shape(format!(
                        "groups has {} entries but there are {n} columns",
                        g.len()
                    )));
                }
                let n_groups = g.iter().max().map_or(0, |m| m + 1);
                let mut counts = vec![0f64; n_groups];
                for &x in g {
                    counts[x] += 1.0;
                }
                if let Some(e) = counts.iter().position(|&c| c == 0.0) {
                    return Err(CoreError::Value(format!(
                        "group ids must be 0..G-1 with every group used; group {e} is empty"
                    )));
                }
                (g, counts)
            }
            _ => (&[], Vec::new()),
        };
        let parts = self.for_row_chunks(n_jobs, |r0, nr_, sc| {
            let mut buf = vec![0f32; nr_ * TILE_COLS];
            let g_count = counts.len();
            let mut sums = vec![0f64; nr_ * g_count.max(1)];
            let mut maxs = vec![f32::NEG_INFINITY; nr_];
            for c0 in (0..n).step_by(TILE_COLS) {
                let nc = TILE_COLS.min(n - c0);
                self.tile(
                    Sel::Range(r0, nr_),
                    Sel::Range(c0, nc),
                    &mut buf,
                    TILE_COLS,
                    sc,
                );
                for r in 0..nr_ {
                    let vals = &buf[r * TILE_COLS..r * TILE_COLS + nc];
                    match how {
                        Aggregate::Mean => {
                            sums[r] = vals.iter().fold(sums[r], |a, &v| a + f64::from(v));
                        }
                        Aggregate::Max => {
                            maxs[r] = vals.iter().fold(maxs[r], |a, &v| if v > a { v } else { a });
                        }
                        Aggregate::MeanMax => {
                            let row = &mut sums[r * g_count..(r + 1) * g_count];
                            for (c, &v) in vals.iter().enumerate() {
                                row[gid[c0 + c]] += f64::from(v);
                            }
                        }
                    }
                }
            }
            (0..nr_)
                .map(|r| match how {
                    Aggregate::Mean => (sums[r] / n as f64) as f32,
                    Aggregate::Max => maxs[r],
                    Aggregate::MeanMax => sums[r * g_count..(r + 1) * g_count]
                        .iter()
                        .zip(&counts)
                        .map(|(s, c)| s / c)
                        .fold(f64::NEG_INFINITY, f64::max)
                        as f32,
                })
                .collect::<Vec<f32>>()
        })?;
        Ok(parts.into_iter().flatten().collect())
    }
}

/// A top-k candidate. Ordered so that the *worst* candidate is the greatest (the top of a
/// max-heap): lower value is worse; at equal value the higher column index is worse.
#[derive(Debug, Clone, Copy)]
struct Cand {
    v: f32,
    idx: usize,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.v.total_cmp(&self.v).then(self.idx.cmp(&other.idx))
    }
}

#[inline]
fn push_topk(heap: &mut BinaryHeap<Cand>, k: usize, v: f32, idx: usize) {
    if heap.len() < k {
        heap.push(Cand { v, idx });
    } else if let Some(mut worst) = heap.peek_mut() {
        // Columns arrive in increasing order, so an equal value never displaces (lower index wins).
        if v.total_cmp(&worst.v) == std::cmp::Ordering::Greater {
            *worst = Cand { v, idx };
        }
    }
}

impl PairwiseSource for BoundScorer {
    fn n_rows(&self) -> usize {
        self.m
    }

    fn n_cols(&self) -> usize {
        self.n
    }

    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()> {
        if out.len() != rows.len() * cols.len() {
            return Err(CoreError::Shape(format!(
                "block output has {} elements, expected {} x {}",
                out.len(),
                rows.len(),
                cols.len()
            )));
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= self.m) {
            return Err(CoreError::Value(format!(
                "row index {r} out of range (M = {})",
                self.m
            )));
        }
        if let Some(&c) = cols.iter().find(|&&c| c >= self.n) {
            return Err(CoreError::Value(format!(
                "column index {c} out of range (N = {})",
                self.n
            )));
        }
        let nc = cols.len();
        let mut sc = Scratch::default();
        // Same tiling of columns as `dense`, so a large block keeps Q in cache.
        for rr in (0..rows.len()).step_by(ROW_CHUNK) {
            let r_sel = &rows[rr..rows.len().min(rr + ROW_CHUNK)];
            for c0 in (0..nc).step_by(TILE_COLS) {
                let c_sel = &cols[c0..nc.min(c0 + TILE_COLS)];
                self.tile(
                    Sel::Idx(r_sel),
                    Sel::Idx(c_sel),
                    &mut out[rr * nc + c0..],
                    nc,
                    &mut sc,
                );
            }
        }
        Ok(())
    }
}
