//! The one interface between kernel providers (dense arrays, embeddings, the
//! InfluenceNetwork scorer) and their consumers (selection, top-k, aggregates).
//!
//! A provider computes `K[row, col]` on request, so a consumer can work on a pool
//! whose full matrix would never fit in memory.

use crate::error::CoreResult;

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
