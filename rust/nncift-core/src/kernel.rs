//! The one interface between kernel providers (dense arrays, embeddings, the
//! InfluenceNetwork scorer) and their consumers (selection, top-k, aggregates).
//!
//! A provider computes `K[row, col]` on request, so a consumer can work on a pool
//! whose full matrix would never fit in memory.

use ndarray::Array2;

use crate::error::{CoreError, CoreResult};

/// A source of pairwise values `K[row, col]` (rows = pool items; columns = target
/// items, or pool items for a pool x pool kernel), computed or looked up on request.
///
/// Implementations must be deterministic (same inputs, same bits) and thread-safe:
/// consumers call `block` from several rayon workers at once.
pub trait PairwiseSource: Sync {
    /// Number of rows of the (possibly virtual) matrix.
    fn n_rows(&self) -> usize;
    /// Number of columns of the (possibly virtual) matrix.
    fn n_cols(&self) -> usize;
    /// Write `K[rows[a], cols[b]]` into `out[a * cols.len() + b]` (row-major block).
    ///
    /// `out.len()` must equal `rows.len() * cols.len()`; indices must be in range.
    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()>;
    /// Write row `K[row, 0..n_cols]` into `out` (length `n_cols`).
    fn row(&self, row: usize, out: &mut [f32]) -> CoreResult<()> {
        let cols: Vec<usize> = (0..self.n_cols()).collect();
        self.block(&[row], &cols, out)
    }
}

/// `K[rows][:, cols]` of `source` as an owned `(rows.len(), cols.len())` array; a block
/// that cannot fit in memory is refused before allocating.
pub fn block_array<S: PairwiseSource + ?Sized>(
    source: &S,
    rows: &[usize],
    cols: &[usize],
) -> CoreResult<Array2<f32>> {
    let n = rows
        .len()
        .checked_mul(cols.len())
        .ok_or_else(|| CoreError::Memory("block too large".into()))?;
    crate::scorer::check_dense_fits(rows.len(), cols.len())?;
    let mut buf = vec![0f32; n];
    source.block(rows, cols, &mut buf)?;
    Array2::from_shape_vec((rows.len(), cols.len()), buf)
        .map_err(|e| CoreError::Runtime(e.to_string()))
}
