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
pub mod bound;
pub mod kernel;
pub mod memory;
mod reduce;
pub mod weights;

use std::sync::Arc;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{CoreError, CoreResult};
use crate::linalg::{first_non_finite_row, normalize_rows};
pub use bound::BoundScorer;
use kernel::{pack_blocks, Isa};
pub use memory::{available_memory, check_dense_fits};
pub use reduce::Aggregate;
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
        let bad = first_non_finite_row(e);
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
                (
                    Some(normalize_rows(rows, f64::from(COSINE_EPS), "rows")?),
                    Some(normalize_rows(cols, f64::from(COSINE_EPS), "cols")?),
                )
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
