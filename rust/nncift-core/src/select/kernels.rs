//! Kernel sources for selection, all seen through one row/column interface.
//!
//! Orientation (project rule): `K[j, t]`, rows `j` = candidate pool items (what
//! is chosen), columns `t` = represented items (the pool itself for a square
//! kernel, or a separate represented / target set). A facility-location gain of
//! candidate `j` therefore reads one contiguous row. Note that submodlib's
//! `separate_rep` kernel is the transpose of this (`n_rep x n`).
//!
//! Three storage kinds:
//! * [`KernelData::Dense`]: a borrowed row-major `f32` matrix (no copy).
//! * [`KernelData::Sparse`]: a kNN kernel, [`SparseKernel`], keeping for every
//!   represented item `t` its `k` most similar candidates (submodlib's sparse
//!   convention: `t` is covered only by its nearest neighbours), stored both
//!   candidate-major (CSR, for gains) and represented-major (for columns).
//! * [`KernelData::Source`]: any [`PairwiseSource`] evaluated on the fly, in
//!   blocks, holding no `N x N` matrix (embeddings' cosine, the InfluenceNetwork).
//!
//! The cosine source lives in `select/cosine.rs`, the kNN kernel and its builds in
//! `select/knn.rs`; both are re-exported here.

use std::sync::Arc;

use ndarray::ArrayView2;
use rayon::prelude::*;

pub use super::cosine::{CosineSource, CosineTransform};
pub use super::knn::SparseKernel;
use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;

/// A shareable on-the-fly kernel source (what the scorer binding hands over).
pub type SharedSource = Arc<dyn PairwiseSource + Send + Sync>;
/// A borrowed dense kernel as a [`PairwiseSource`] (used to build sparse kernels
/// from a dense one and in tests).
pub struct DenseSource<'a> {
    pub data: ArrayView2<'a, f32>,
}

impl PairwiseSource for DenseSource<'_> {
    fn n_rows(&self) -> usize {
        self.data.nrows()
    }
    fn n_cols(&self) -> usize {
        self.data.ncols()
    }
    fn block(&self, rows: &[usize], cols: &[usize], out: &mut [f32]) -> CoreResult<()> {
        if out.len() != rows.len() * cols.len() {
            return Err(CoreError::Shape("block output has the wrong length".into()));
        }
        let (n, m) = self.data.dim();
        for (a, &r) in rows.iter().enumerate() {
            if r >= n {
                return Err(CoreError::Value(format!(
                    "row {r} out of range for {n} rows"
                )));
            }
            for (b, &c) in cols.iter().enumerate() {
                if c >= m {
                    return Err(CoreError::Value(format!(
                        "column {c} out of range for {m} columns"
                    )));
                }
                out[a * cols.len() + b] = self.data[[r, c]];
            }
        }
        Ok(())
    }
}
/// One kernel in any of the three storage kinds.
pub enum KernelData<'a> {
    Dense(ArrayView2<'a, f32>),
    Sparse(Arc<SparseKernel>),
    Source(SharedSource),
}

impl KernelData<'_> {
    pub fn n_rows(&self) -> usize {
        match self {
            KernelData::Dense(a) => a.nrows(),
            KernelData::Sparse(s) => s.n_rows(),
            KernelData::Source(s) => s.n_rows(),
        }
    }
    pub fn n_cols(&self) -> usize {
        match self {
            KernelData::Dense(a) => a.ncols(),
            KernelData::Sparse(s) => s.n_cols(),
            KernelData::Source(s) => s.n_cols(),
        }
    }
    /// Short name for reports: "dense", "sparse", "onthefly".
    pub fn mode_name(&self) -> &'static str {
        match self {
            KernelData::Dense(_) => "dense",
            KernelData::Sparse(_) => "sparse",
            KernelData::Source(_) => "onthefly",
        }
    }

    /// Column `t` over all candidates, written densely into `out` (len n_rows).
    pub fn column(&self, t: usize, out: &mut [f32]) -> CoreResult<()> {
        match self {
            KernelData::Dense(a) => {
                for (o, v) in out.iter_mut().zip(a.column(t).iter()) {
                    *o = *v;
                }
                Ok(())
            }
            KernelData::Sparse(s) => {
                out.fill(0.0);
                let (idx, val) = s.col(t);
                for (&j, &v) in idx.iter().zip(val) {
                    out[j as usize] = v;
                }
                Ok(())
            }
            KernelData::Source(s) => {
                let n = s.n_rows();
                let rows: Vec<usize> = (0..n).collect();
                // Chunked so that a parallel caller never needs more than a few
                // MB per call even for millions of candidates.
                out.par_chunks_mut(65536)
                    .zip(rows.par_chunks(65536))
                    .try_for_each(|(o, r)| s.block(r, &[t], o))
            }
        }
    }

    /// Row `j` over all columns, written densely into `out` (len n_cols).
    pub fn row(&self, j: usize, out: &mut [f32]) -> CoreResult<()> {
        match self {
            KernelData::Dense(a) => {
                for (o, v) in out.iter_mut().zip(a.row(j).iter()) {
                    *o = *v;
                }
                Ok(())
            }
            KernelData::Sparse(s) => {
                out.fill(0.0);
                let (idx, val) = s.row(j);
                for (&t, &v) in idx.iter().zip(val) {
                    out[t as usize] = v;
                }
                Ok(())
            }
            KernelData::Source(s) => {
                let m = s.n_cols();
                let cols: Vec<usize> = (0..m).collect();
                out.par_chunks_mut(65536)
                    .zip(cols.par_chunks(65536))
                    .try_for_each(|(o, c)| s.block(&[j], c, o))
            }
        }
    }

    /// Per-row maximum over all columns (used for FLMI's query cap and FLCG's
    /// private floor), computed blockwise. Missing sparse entries count as 0.
    pub fn row_max(&self) -> CoreResult<Vec<f32>> {
        let n = self.n_rows();
        match self {
            KernelData::Dense(a) => Ok((0..n)
                .into_par_iter()
                .map(|j| a.row(j).iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)))
                .collect()),
            KernelData::Sparse(s) => Ok((0..n)
                .into_par_iter()
                .map(|j| {
                    let (_, val) = s.row(j);
                    let m = val.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    if val.len() < s.n_cols() {
                        m.max(0.0)
                    } else {
                        m
                    }
                })
                .collect()),
            KernelData::Source(src) => {
                let m = src.n_cols();
                let cols: Vec<usize> = (0..m).collect();
                let chunk = (4_000_000 / m.max(1)).clamp(1, 4096);
                let rows: Vec<usize> = (0..n).collect();
                let parts: CoreResult<Vec<Vec<f32>>> = rows
                    .par_chunks(chunk)
                    .map(|r| {
                        let mut buf = vec![0f32; r.len() * m];
                        src.block(r, &cols, &mut buf)?;
                        Ok(buf
                            .chunks(m)
                            .map(|line| line.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)))
                            .collect())
                    })
                    .collect();
                Ok(parts?.concat())
            }
        }
    }
}
