//! The bound scorer: a [`Scorer`] with `P`, `Q` (and the cosine / bilinear factors) computed
//! for one set of rows and columns, and the tile kernel that evaluates any block of pairs
//! (the fused one-hidden-layer kernel, or the general path for linear and deep networks),
//! then adds the output bias, cosine and bilinear terms and the label scaling in one fixed
//! order. [`PairwiseSource::block`] is a thin loop over tiles.

use std::sync::Arc;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::kernel::{fused_tile, FusedTile};
use super::{Scorer, DEEP_COLS, ROW_CHUNK, TILE_COLS};
use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;
use crate::linalg::{gemm_abt, rows_of, Sel};

/// Per-worker buffers, reused across tiles.
#[derive(Default)]
pub(super) struct Scratch {
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
    pub(super) scorer: Arc<Scorer>,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) mr: usize,
    pub(super) nr: usize,
    /// `P` `(M, h_0)` and `Q` `(N, h_0)`, kept for the deep and linear paths.
    pub(super) p: Option<Array2<f32>>,
    pub(super) q: Option<Array2<f32>>,
    /// Packed `P` / `Q` for the fused kernel.
    pub(super) pp: Vec<f32>,
    pub(super) qp: Vec<f32>,
    pub(super) rows_hat: Option<Array2<f32>>,
    pub(super) cols_hat: Option<Array2<f32>>,
    pub(super) ue: Option<Array2<f32>>,
    pub(super) ve: Option<Array2<f32>>,
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
impl BoundScorer {
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
    pub(super) fn tile(
        &self,
        rows: Sel<'_>,
        cols: Sel<'_>,
        out: &mut [f32],
        stride: usize,
        sc: &mut Scratch,
    ) {
        let s = &*self.scorer;
        let (nr_, nc) = (rows.len(), cols.len());
        if nr_ == 0 || nc == 0 {
            return;
        }
        let mut cos = std::mem::take(&mut sc.cos);
        if let (Some(rh), Some(ch)) = (&self.rows_hat, &self.cols_hat) {
            cos.clear();
            cos.resize(nr_ * nc, 0.0);
            // The buffer is sized to the tile, so the shape always matches.
            let _ = gemm_abt(rows_of(rh, rows).view(), rows_of(ch, cols).view(), &mut cos);
        }
        let mut bil = std::mem::take(&mut sc.bil);
        if let (Some(ue), Some(ve)) = (&self.ue, &self.ve) {
            bil.clear();
            bil.resize(nr_ * nc, 0.0);
            // The buffer is sized to the tile, so the shape always matches.
            let _ = gemm_abt(rows_of(ue, rows).view(), rows_of(ve, cols).view(), &mut bil);
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
