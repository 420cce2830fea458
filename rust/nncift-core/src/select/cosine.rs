//! Cosine similarity of embeddings as a kernel, computed in blocks with a matrix product
//! of L2-normalised rows: [`CosineSource`] (any block, the full square matrix using
//! symmetry, the square kernel of a subset) and the [`CosineTransform`] that makes it
//! non-negative.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;
use crate::linalg::{gemm_abt, normalize_rows, rows_of, Sel};

/// How raw cosine similarities in `[-1, 1]` are made non-negative, as the
/// coverage functions require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosineTransform {
    /// `max(cos, 0)`: facility location already ignores negative similarities
    /// (its "nearest chosen" value starts at 0), so this keeps FL objectives
    /// identical to submodlib's on the raw cosine kernel. The default.
    Clip,
    /// `(1 + cos) / 2`: keeps the order of all pairs, maps into `[0, 1]`.
    Shift,
    /// The raw cosine; only for functions that accept negative values (top-k).
    Raw,
}

impl CosineTransform {
    #[inline]
    fn apply(self, c: f32) -> f32 {
        match self {
            CosineTransform::Clip => c.max(0.0),
            CosineTransform::Shift => 0.5 * (1.0 + c),
            CosineTransform::Raw => c,
        }
    }
}
/// Cosine similarity between rows of two embedding matrices, computed in blocks
/// with a matrix product: `K[j, t] = transform(cos(rows[j], cols[t]))`.
pub struct CosineSource {
    pub(super) rows: Array2<f32>,
    /// `None` when the kernel is square over the same embeddings.
    pub(super) cols: Option<Array2<f32>>,
    pub(super) transform: CosineTransform,
}

impl CosineSource {
    /// `rows`: (n, d) float32 candidate embeddings; `cols`: (m, d) represented
    /// embeddings, or `None` for the square pool x pool kernel. Both are
    /// L2-normalised here (a copy of O(n d) memory).
    pub fn new(
        rows: ArrayView2<'_, f32>,
        cols: Option<ArrayView2<'_, f32>>,
        transform: CosineTransform,
    ) -> CoreResult<Self> {
        if rows.nrows() == 0 || rows.ncols() == 0 {
            return Err(CoreError::Shape(
                "embeddings must be a non-empty (n, d) matrix".into(),
            ));
        }
        let rows_n = normalize_rows(rows, 0.0, "embeddings")?;
        let cols_n = match cols {
            Some(c) => {
                if c.ncols() != rows.ncols() {
                    return Err(CoreError::Shape(format!(
                        "embedding widths differ: pool has d={}, other set has d={}",
                        rows.ncols(),
                        c.ncols()
                    )));
                }
                if c.nrows() == 0 {
                    return Err(CoreError::Shape("the other embedding set is empty".into()));
                }
                Some(normalize_rows(c, 0.0, "other embeddings")?)
            }
            None => None,
        };
        Ok(Self {
            rows: rows_n,
            cols: cols_n,
            transform,
        })
    }

    /// `transform(clamp(a . b^T))` for normalised rows `a` `(h, d)` and `b` `(w, d)` into
    /// `out` `(h, w)`: the one arithmetic of every entry, whichever method asks for it.
    pub(super) fn tile(
        &self,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        out: &mut [f32],
    ) -> CoreResult<()> {
        gemm_abt(a, b, out)?;
        let t = self.transform;
        for v in out.iter_mut() {
            *v = t.apply(v.clamp(-1.0, 1.0));
        }
        Ok(())
    }

    fn col_matrix(&self) -> &Array2<f32> {
        self.cols.as_ref().unwrap_or(&self.rows)
    }

    /// The square source over the items `idx` of a square source (rows are
    /// copied, already normalised, so every entry keeps its exact bits).
    pub fn subset(&self, idx: &[usize]) -> CoreResult<Self> {
        if self.cols.is_some() {
            return Err(CoreError::Value(
                "subset needs a square (cols = None) cosine source".into(),
            ));
        }
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.rows.nrows()) {
            return Err(CoreError::Value(format!(
                "index {bad} out of range for {} items",
                self.rows.nrows()
            )));
        }
        Ok(Self {
            rows: self.rows.select(Axis(0), idx),
            cols: None,
            transform: self.transform,
        })
    }

    /// The full square kernel `(n, n)` of a square source, using symmetry:
    /// tiles `(I, J)` with `I <= J` are computed once and mirrored (entries
    /// keep the bits `block` gives them: a dot product is computed in the same
    /// order whichever of the two vectors comes first). Half the matrix-product
    /// work of filling it with `block`. Must run inside the caller's rayon pool.
    pub fn dense_self(&self) -> CoreResult<Array2<f32>> {
        if self.cols.is_some() {
            return Err(CoreError::Value(
                "dense_self needs a square (cols = None) cosine source".into(),
            ));
        }
        const TILE: usize = 512;
        let n = self.rows.nrows();
        let mut out = Array2::<f32>::zeros((n, n));
        let nb = n.div_ceil(TILE);
        let base = SyncPtr(
            out.as_slice_mut()
                .ok_or_else(|| CoreError::Runtime("fresh array not contiguous".into()))?
                .as_mut_ptr(),
        );
        let x = &self.rows;
        let tiles: Vec<(usize, usize)> =
            (0..nb).flat_map(|i| (i..nb).map(move |j| (i, j))).collect();
        tiles.par_iter().try_for_each_init(
            || vec![0f32; TILE * TILE],
            |buf, &(bi, bj)| -> CoreResult<()> {
                let (i0, i1) = (bi * TILE, ((bi + 1) * TILE).min(n));
                let (j0, j1) = (bj * TILE, ((bj + 1) * TILE).min(n));
                let (h, w) = (i1 - i0, j1 - j0);
                let tile = &mut buf[..h * w];
                self.tile(x.slice(s![i0..i1, ..]), x.slice(s![j0..j1, ..]), tile)?;
                let p = base;
                for a in 0..h {
                    for b in 0..w {
                        let v = tile[a * w + b];
                        // SAFETY: indices are < n in both axes, so inside
                        // the n x n buffer; the task for tile (I, J), I <= J,
                        // is the only writer of blocks (I, J) and (J, I), and
                        // `out` is not otherwise accessed until all finish.
                        unsafe {
                            *p.0.add((i0 + a) * n + j0 + b) = v;
                            if bi != bj {
                                *p.0.add((j0 + b) * n + i0 + a) = v;
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}

/// A raw pointer that may cross threads (disjoint writes, see `dense_self`).
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used for writes to disjoint regions while the owner waits.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// The rows `idx` of `m` (borrowed when contiguous), after checking the indices.
fn checked_rows<'a>(
    m: &'a Array2<f32>,
    idx: &[usize],
) -> CoreResult<ndarray::CowArray<'a, f32, ndarray::Ix2>> {
    let n = m.nrows();
    if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
        return Err(CoreError::Value(format!(
            "index {bad} out of range for {n} items"
        )));
    }
    Ok(rows_of(m, Sel::Idx(idx)))
}

impl PairwiseSource for CosineSource {
    fn n_rows(&self) -> usize {
        self.rows.nrows()
    }
    fn n_cols(&self) -> usize {
        self.col_matrix().nrows()
    }
    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()> {
        if out.len() != rows.len() * cols.len() {
            return Err(CoreError::Shape("block output has the wrong length".into()));
        }
        if rows.is_empty() || cols.is_empty() {
            return Ok(());
        }
        let a = checked_rows(&self.rows, rows)?;
        let b = checked_rows(self.col_matrix(), cols)?;
        self.tile(a.view(), b.view(), out)?;
        Ok(())
    }
}
