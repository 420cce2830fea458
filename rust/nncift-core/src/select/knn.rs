//! The sparse kNN kernel: for every represented item its `k` most similar candidates, built
//! blockwise from any [`PairwiseSource`] or, for the square cosine kernel, from the upper
//! triangle of tiles only. Neighbours are kept under the one ordering of
//! [`crate::order`] (larger value, then lower tie rank, then lower index), so the kept set
//! does not depend on the arrival order or the thread count.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ndarray::s;
use rayon::prelude::*;

use super::cosine::CosineSource;
use crate::error::{CoreError, CoreResult};
use crate::kernel::PairwiseSource;
use crate::order::Ranked;

/// Per-column `(candidate, value)` lists of one block of columns.
type ColumnLists = Vec<Vec<(u32, f32)>>;

/// A kNN kernel: for every represented item `t`, its `k` largest entries
/// `K[j, t]` over candidates `j` (equal values: the lower tie rank of `j`, see
/// [`Self::knn_from_source_ranked`]; the lowest `j` without ranks); every other
/// entry is 0.
#[derive(Debug, Clone)]
pub struct SparseKernel {
    n_rows: usize,
    n_cols: usize,
    /// Candidate-major (CSR over `j`): `row_ptr[j]..row_ptr[j+1]` index
    /// `row_idx` (represented `t`, ascending) and `row_val`.
    row_ptr: Vec<usize>,
    row_idx: Vec<u32>,
    row_val: Vec<f32>,
    /// Represented-major: `col_ptr[t]..col_ptr[t+1]` index `col_idx`
    /// (candidates `j`, ascending) and `col_val`.
    col_ptr: Vec<usize>,
    col_idx: Vec<u32>,
    col_val: Vec<f32>,
}
impl SparseKernel {
    /// Number of candidates (rows).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    /// Number of represented items (columns).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }
    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.row_val.len()
    }
    /// Row `j`: (represented indices, values).
    #[inline]
    pub fn row(&self, j: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[j], self.row_ptr[j + 1]);
        (&self.row_idx[a..b], &self.row_val[a..b])
    }
    /// Column `t`: (candidate indices, values).
    #[inline]
    pub fn col(&self, t: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.col_ptr[t], self.col_ptr[t + 1]);
        (&self.col_idx[a..b], &self.col_val[a..b])
    }
    /// Entry `K[j, t]` (0 when not stored); binary search in row `j`.
    pub fn get(&self, j: usize, t: usize) -> f32 {
        let (idx, val) = self.row(j);
        match idx.binary_search(&(t as u32)) {
            Ok(p) => val[p],
            Err(_) => 0.0,
        }
    }

    /// Build from per-column lists `(t, [(j, v)])` sorted by `j`.
    fn from_columns(n_rows: usize, cols: Vec<Vec<(u32, f32)>>) -> Self {
        let n_cols = cols.len();
        let mut col_ptr = Vec::with_capacity(n_cols + 1);
        col_ptr.push(0usize);
        let nnz: usize = cols.iter().map(Vec::len).sum();
        let mut col_idx = Vec::with_capacity(nnz);
        let mut col_val = Vec::with_capacity(nnz);
        let mut counts = vec![0usize; n_rows + 1];
        for c in &cols {
            for &(j, v) in c {
                col_idx.push(j);
                col_val.push(v);
                counts[j as usize + 1] += 1;
            }
            col_ptr.push(col_idx.len());
        }
        // Counting-sort transpose into candidate-major order; columns are
        // visited in ascending t, so each row's indices come out sorted.
        for j in 0..n_rows {
            counts[j + 1] += counts[j];
        }
        let row_ptr = counts.clone();
        let mut fill = counts;
        let mut row_idx = vec![0u32; nnz];
        let mut row_val = vec![0f32; nnz];
        for (t, c) in cols.iter().enumerate() {
            for &(j, v) in c {
                let p = fill[j as usize];
                row_idx[p] = t as u32;
                row_val[p] = v;
                fill[j as usize] += 1;
            }
        }
        Self {
            n_rows,
            n_cols,
            row_ptr,
            row_idx,
            row_val,
            col_ptr,
            col_idx,
            col_val,
        }
    }

    /// Build a kNN kernel from any source, blockwise: for each represented
    /// column `t`, keep the `k` largest `K[j, t]` (ties to the lowest `j`).
    /// Memory: the result plus one `block_rows x block_cols` buffer per worker.
    /// Must run inside the caller's rayon pool; the result does not depend on it.
    pub fn knn_from_source(src: &(dyn PairwiseSource + Send + Sync), k: usize) -> CoreResult<Self> {
        let rank: Vec<u64> = (0..src.n_rows() as u64).collect();
        Self::knn_from_source_ranked(src, k, &rank)
    }

    /// [`Self::knn_from_source`] with equal values decided by `rank` (one per
    /// candidate row; lower wins, then the lower index): the selection's tie
    /// ranks, so that a pool of equal similarities does not keep the head of
    /// the file as everyone's neighbours.
    pub fn knn_from_source_ranked(
        src: &(dyn PairwiseSource + Send + Sync),
        k: usize,
        rank: &[u64],
    ) -> CoreResult<Self> {
        let (n, m) = (src.n_rows(), src.n_cols());
        if rank.len() != n {
            return Err(CoreError::Shape(format!(
                "tie ranks have length {}, the kernel has {n} rows",
                rank.len()
            )));
        }
        if n == 0 || m == 0 {
            return Err(CoreError::Shape(
                "cannot build a kNN kernel over an empty pool".into(),
            ));
        }
        if k == 0 {
            return Err(CoreError::Value("knn must be >= 1".into()));
        }
        let k = k.min(n);
        const BLOCK_COLS: usize = 256;
        const BLOCK_ROWS: usize = 2048;
        let starts: Vec<usize> = (0..m).step_by(BLOCK_COLS).collect();
        let parts: Vec<CoreResult<ColumnLists>> = starts
            .par_iter()
            .map(|&c0| {
                let c1 = (c0 + BLOCK_COLS).min(m);
                let cols: Vec<usize> = (c0..c1).collect();
                let w = cols.len();
                let mut heaps: Vec<BinaryHeap<Reverse<Ranked<f32>>>> =
                    (0..w).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
                // Worst kept value per column: the cheap rejection test.
                let mut thresh = vec![f32::NEG_INFINITY; w];
                let mut buf = vec![0f32; BLOCK_ROWS.min(n) * w];
                for r0 in (0..n).step_by(BLOCK_ROWS) {
                    let r1 = (r0 + BLOCK_ROWS).min(n);
                    let rows: Vec<usize> = (r0..r1).collect();
                    let out = &mut buf[..rows.len() * w];
                    src.block(&rows, &cols, out)?;
                    for (a, j) in (r0..r1).enumerate() {
                        let line = &out[a * w..(a + 1) * w];
                        for (b, &v) in line.iter().enumerate() {
                            if !v.is_finite() {
                                return Err(CoreError::Value(format!(
                                    "kernel source produced NaN/inf at ({j}, {})",
                                    c0 + b
                                )));
                            }
                            let e = Ranked::of(v, rank, j);
                            if heaps[b].len() < k {
                                heaps[b].push(Reverse(e));
                                if heaps[b].len() == k {
                                    thresh[b] =
                                        heaps[b].peek().map_or(f32::NEG_INFINITY, |e| e.0.value);
                                }
                            } else if v >= thresh[b] && heaps[b].peek().is_some_and(|w| e > w.0) {
                                // `>=`: an equal value may still win on its tie rank.
                                heaps[b].pop();
                                heaps[b].push(Reverse(e));
                                thresh[b] =
                                    heaps[b].peek().map_or(f32::NEG_INFINITY, |e| e.0.value);
                            }
                        }
                    }
                }
                Ok(heaps
                    .into_iter()
                    .map(|h| {
                        let mut e: Vec<(u32, f32)> =
                            h.into_iter().map(|r| (r.0.idx as u32, r.0.value)).collect();
                        e.sort_unstable_by_key(|x| x.0);
                        e
                    })
                    .collect())
            })
            .collect();
        let mut cols = Vec::with_capacity(m);
        for p in parts {
            cols.extend(p?);
        }
        Ok(Self::from_columns(n, cols))
    }

    /// The kNN kernel of the square cosine kernel of `src` (built with
    /// `cols = None`), using its symmetry: only tiles `(I, J)` with `I <= J` are
    /// computed, and each feeds the top-k lists of both its row block and its
    /// column block, halving the matrix-product work of
    /// [`Self::knn_from_source`]. Each worker keeps its own flat top-k lists
    /// over all columns (O(n k) memory) plus one tile; the lists are merged at
    /// the end under the total order "larger value, then lower index", so the
    /// result equals [`Self::knn_from_source`] on the same source and does not
    /// depend on the thread count. Must run inside the caller's rayon pool.
    pub fn knn_cosine_self(src: &CosineSource, k: usize) -> CoreResult<Self> {
        let rank: Vec<u64> = (0..src.rows.nrows() as u64).collect();
        Self::knn_cosine_self_ranked(src, k, &rank)
    }

    /// [`Self::knn_cosine_self`] with equal values decided by `rank` (lower
    /// wins, then the lower index); equals [`Self::knn_from_source_ranked`].
    pub fn knn_cosine_self_ranked(src: &CosineSource, k: usize, rank: &[u64]) -> CoreResult<Self> {
        if src.cols.is_some() {
            return Err(CoreError::Value(
                "knn_cosine_self needs a square (cols = None) cosine source".into(),
            ));
        }
        let n = src.rows.nrows();
        if n == 0 {
            return Err(CoreError::Shape(
                "cannot build a kNN kernel over an empty pool".into(),
            ));
        }
        if rank.len() != n {
            return Err(CoreError::Shape(format!(
                "tie ranks have length {}, the pool has {n} items",
                rank.len()
            )));
        }
        if k == 0 {
            return Err(CoreError::Value("knn must be >= 1".into()));
        }
        if n > u32::MAX as usize {
            return Err(CoreError::Value(format!(
                "{n} items exceed the u32 index range"
            )));
        }
        let k = k.min(n);
        const TILE: usize = 1024;
        let nb = n.div_ceil(TILE);
        let tiles: Vec<(usize, usize)> =
            (0..nb).flat_map(|i| (i..nb).map(move |j| (i, j))).collect();
        let threads = rayon::current_num_threads().max(1);
        let slots: Vec<std::sync::Mutex<Option<Worker>>> =
            (0..threads).map(|_| std::sync::Mutex::new(None)).collect();
        let x = &src.rows;
        tiles
            .par_iter()
            .try_for_each(|&(bi, bj)| -> CoreResult<()> {
                let slot = rayon::current_thread_index().unwrap_or(0) % threads;
                // Each thread only ever locks its own slot: never contended.
                let mut guard = slots[slot]
                    .lock()
                    .map_err(|_| CoreError::Runtime("kNN worker state poisoned".into()))?;
                let (top, buf) =
                    guard.get_or_insert_with(|| (TopK::new(n, k, rank), vec![0f32; TILE * TILE]));
                let (i0, i1) = (bi * TILE, ((bi + 1) * TILE).min(n));
                let (j0, j1) = (bj * TILE, ((bj + 1) * TILE).min(n));
                let (h, w) = (i1 - i0, j1 - j0);
                let a = x.slice(s![i0..i1, ..]);
                let b = x.slice(s![j0..j1, ..]);
                let out = &mut buf[..h * w];
                src.tile(a, b, out)?;
                for (r, line) in out.chunks_exact(w).enumerate() {
                    let cand = (i0 + r) as u32;
                    // Columns j0..j1 gain candidate i0 + r.
                    top.offer_row(j0, line, cand);
                    if bi != bj {
                        // Column i0 + r gains candidates j0..j1 (the mirrored half).
                        top.offer_col(i0 + r, line, j0 as u32);
                    }
                }
                Ok(())
            })?;
        let mut tops: Vec<TopK<'_>> = slots
            .into_iter()
            .filter_map(|m| m.into_inner().ok().flatten().map(|(t, _)| t))
            .collect();
        let mut first = tops
            .pop()
            .ok_or_else(|| CoreError::Runtime("kNN build produced no lists".into()))?;
        for other in &tops {
            first.merge(other);
        }
        Ok(Self::from_columns(n, first.into_columns()))
    }
}

/// One kNN-build worker's state: its top-k lists and its tile buffer.
type Worker<'r> = (TopK<'r>, Vec<f32>);

/// Flat per-column top-k lists (the kNN build's working state): for column
/// `t`, `len[t]` entries at `t * k ..`, and its worst kept entry cached so that
/// almost every offer is one comparison. Ordering: larger value first, then
/// lower (tie rank, candidate index), so the kept set is unique whatever the
/// arrival order.
struct TopK<'r> {
    k: usize,
    /// Tie rank per candidate.
    rank: &'r [u64],
    val: Vec<f32>,
    idx: Vec<u32>,
    len: Vec<u32>,
    /// Worst kept value (-inf while the list is not full): the admission bar.
    bar: Vec<f32>,
    /// Candidate index and position of the worst kept entry.
    bar_j: Vec<u32>,
    bar_pos: Vec<u32>,
}

impl<'r> TopK<'r> {
    fn new(n: usize, k: usize, rank: &'r [u64]) -> Self {
        Self {
            k,
            rank,
            val: vec![0.0; n * k],
            idx: vec![0; n * k],
            len: vec![0; n],
            bar: vec![f32::NEG_INFINITY; n],
            bar_j: vec![u32::MAX; n],
            bar_pos: vec![0; n],
        }
    }

    #[inline]
    fn ranked(&self, v: f32, j: u32) -> Ranked<f32> {
        Ranked::of(v, self.rank, j as usize)
    }

    /// Offer candidate `j` with value `v` to column `t`.
    #[inline]
    fn offer(&mut self, t: usize, v: f32, j: u32) {
        let k = self.k;
        let base = t * k;
        let len = self.len[t] as usize;
        if len < k {
            self.val[base + len] = v;
            self.idx[base + len] = j;
            self.len[t] += 1;
            if len + 1 == k {
                self.refresh_bar(t);
            }
            return;
        }
        if self.ranked(v, j) > self.ranked(self.bar[t], self.bar_j[t]) {
            let p = base + self.bar_pos[t] as usize;
            self.val[p] = v;
            self.idx[p] = j;
            self.refresh_bar(t);
        }
    }

    fn refresh_bar(&mut self, t: usize) {
        let base = t * self.k;
        let mut wp = 0;
        for p in 1..self.k {
            let (v, j) = (self.val[base + p], self.idx[base + p]);
            let (wv, wj) = (self.val[base + wp], self.idx[base + wp]);
            if self.ranked(v, j) < self.ranked(wv, wj) {
                wp = p;
            }
        }
        self.bar[t] = self.val[base + wp];
        self.bar_j[t] = self.idx[base + wp];
        self.bar_pos[t] = wp as u32;
    }

    /// Columns `t0..t0 + line.len()` each get candidate `j` with `line[b]`.
    #[inline]
    fn offer_row(&mut self, t0: usize, line: &[f32], j: u32) {
        const C: usize = 16;
        let w = line.len();
        let mut b = 0;
        while b < w {
            let e = (b + C).min(w);
            // Branch-free screen of a chunk against the bars (vectorises);
            // `>=` lets ties through to the exact comparison in `offer`.
            let bars = &self.bar[t0 + b..t0 + e];
            let hit = line[b..e]
                .iter()
                .zip(bars)
                .fold(false, |h, (&v, &m)| h | (v >= m));
            if hit {
                for (q, &v) in line.iter().enumerate().take(e).skip(b) {
                    if v >= self.bar[t0 + q] {
                        self.offer(t0 + q, v, j);
                    }
                }
            }
            b = e;
        }
    }

    /// Column `t` gets candidates `j0 + b` with values `line[b]`.
    #[inline]
    fn offer_col(&mut self, t: usize, line: &[f32], j0: u32) {
        let m = line
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        if m < self.bar[t] {
            return;
        }
        for (b, &v) in line.iter().enumerate() {
            if v >= self.bar[t] {
                self.offer(t, v, j0 + b as u32);
            }
        }
    }

    /// Fold another worker's lists into these (order-independent).
    fn merge(&mut self, o: &TopK<'_>) {
        for t in 0..self.len.len() {
            let base = t * o.k;
            for p in 0..o.len[t] as usize {
                let v = o.val[base + p];
                if v >= self.bar[t] {
                    self.offer(t, v, o.idx[base + p]);
                }
            }
        }
    }

    /// Per-column `(candidate, value)` lists sorted by candidate.
    fn into_columns(self) -> ColumnLists {
        (0..self.len.len())
            .map(|t| {
                let base = t * self.k;
                let mut e: Vec<(u32, f32)> = (0..self.len[t] as usize)
                    .map(|p| (self.idx[base + p], self.val[base + p]))
                    .collect();
                e.sort_unstable_by_key(|x| x.0);
                e
            })
            .collect()
    }
}
