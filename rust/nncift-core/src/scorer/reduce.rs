//! Whole-matrix reductions of a [`BoundScorer`]: dense scores (into a fresh array or a
//! caller's buffer), per-row top-k and per-row aggregates, each computed over row chunks in
//! parallel from the same tiles, so every result agrees bit for bit with `block`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ndarray::Array2;
use rayon::prelude::*;

use super::bound::{BoundScorer, Scratch};
use super::{check_dense_fits, ROW_CHUNK, TILE_COLS};
use crate::error::{CoreError, CoreResult};
use crate::linalg::Sel;
use crate::order::Ranked;

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
impl BoundScorer {
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
                // Reversed order: the best comes first once sorted ascending.
                for Reverse(cand) in heap.into_sorted_vec() {
                    idx.push(cand.idx as i64);
                    val.push(cand.value);
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
/// A kept top-k candidate: the one ordering with ties to the lower column index, reversed so
/// that the *worst* kept candidate is the top of the max-heap.
type Cand = Reverse<Ranked<f32>>;

#[inline]
fn push_topk(heap: &mut BinaryHeap<Cand>, k: usize, v: f32, idx: usize) {
    let cand = Reverse(Ranked::by_index(v, idx));
    if heap.len() < k {
        heap.push(cand);
    } else if let Some(mut worst) = heap.peek_mut() {
        // Columns arrive in increasing order, so an equal value never displaces (lower index wins).
        if cand < *worst {
            *worst = cand;
        }
    }
}
