//! Row-wise helpers shared by the scorer and selection: picking rows (borrowed
//! when contiguous, gathered otherwise), L2 row normalisation and the block
//! product `A B^T`.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2};
use rayon::prelude::*;

use crate::error::{CoreError, CoreResult};

/// A selection of rows: an aligned range or a list of indices.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sel<'a> {
    /// `(start, len)`.
    Range(usize, usize),
    Idx(&'a [usize]),
}

impl Sel<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Sel::Range(_, n) => *n,
            Sel::Idx(ix) => ix.len(),
        }
    }

    pub(crate) fn get(&self, a: usize) -> usize {
        match self {
            Sel::Range(s, _) => s + a,
            Sel::Idx(ix) => ix[a],
        }
    }

    /// `Some(start)` for a non-empty contiguous run of indices.
    pub(crate) fn contiguous(&self) -> Option<usize> {
        match self {
            Sel::Range(s, n) => (*n > 0).then_some(*s),
            Sel::Idx(ix) => {
                let s = *ix.first()?;
                ix.iter().enumerate().all(|(a, &i)| i == s + a).then_some(s)
            }
        }
    }
}

/// The rows `sel` of `x`: a borrowed view when they are contiguous, a gathered
/// copy otherwise. Indices must be in range (callers check user input).
pub(crate) fn rows_of<'x>(x: &'x Array2<f32>, sel: Sel<'_>) -> CowArray<'x, f32, Ix2> {
    match sel.contiguous() {
        Some(s) => x.slice(s![s..s + sel.len(), ..]).into(),
        None => {
            let idx: Vec<usize> = (0..sel.len()).map(|a| sel.get(a)).collect();
            x.select(Axis(0), &idx).into()
        }
    }
}

/// `a (na, k) . b (nb, k)^T` into `out` (row-major `(na, nb)`, exactly that long).
pub(crate) fn gemm_abt(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    out: &mut [f32],
) -> CoreResult<()> {
    let mut o = ArrayViewMut2::from_shape((a.nrows(), b.nrows()), out)
        .map_err(|e| CoreError::Shape(e.to_string()))?;
    general_mat_mul(1.0, &a, &b.t(), 0.0, &mut o);
    Ok(())
}

/// The first row of `x` holding NaN or an infinity (rows scanned in parallel
/// chunks; the answer is the lowest such row whatever the thread count).
pub(crate) fn first_non_finite_row(x: &ArrayView2<'_, f32>) -> Option<usize> {
    const CHUNK: usize = 256;
    x.axis_chunks_iter(Axis(0), CHUNK)
        .into_par_iter()
        .enumerate()
        .find_map_first(|(ci, chunk)| {
            chunk
                .outer_iter()
                .position(|row| row.iter().any(|v| !v.is_finite()))
                .map(|r| ci * CHUNK + r)
        })
}

/// L2-normalise the rows of `x` `(n, d)` into a new array: `row / max(|row|, eps)`,
/// the norm accumulated in f64 and applied as one f32 multiplier; a zero row
/// stays zero (its cosine with anything is 0). `eps = 1e-12` is the clamp
/// `nncift.network` trains with; `eps = 0` divides by the exact norm. Fails on
/// NaN / inf, naming the first bad row of `what`.
pub fn normalize_rows(x: ArrayView2<'_, f32>, eps: f64, what: &str) -> CoreResult<Array2<f32>> {
    if let Some(i) = first_non_finite_row(&x) {
        return Err(CoreError::Value(format!(
            "{what} row {i} contains NaN or inf; embeddings must be finite"
        )));
    }
    let mut out = x.to_owned();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let ss = row
                .iter()
                .fold(0.0f64, |a, &v| a + f64::from(v) * f64::from(v));
            let norm = ss.sqrt().max(eps);
            if norm > 0.0 {
                let inv = (1.0 / norm) as f32;
                row.mapv_inplace(|v| v * inv);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rows_of_borrows_contiguous_and_gathers_otherwise() {
        let x = array![[0.0f32], [1.0], [2.0], [3.0]];
        assert!(rows_of(&x, Sel::Idx(&[1, 2])).is_view());
        assert!(rows_of(&x, Sel::Range(2, 2)).is_view());
        let g = rows_of(&x, Sel::Idx(&[3, 0]));
        assert!(g.is_owned());
        assert_eq!(g.column(0).to_vec(), vec![3.0, 0.0]);
        assert_eq!(rows_of(&x, Sel::Idx(&[])).nrows(), 0);
    }

    #[test]
    fn normalize_rows_keeps_zero_rows_and_rejects_nan() {
        let x = array![[3.0f32, 4.0], [0.0, 0.0]];
        let n = normalize_rows(x.view(), 0.0, "e").expect("finite");
        assert_eq!(n.row(1).to_vec(), vec![0.0, 0.0]);
        assert!((n[[0, 0]] - 0.6).abs() < 1e-7);
        let bad = array![[1.0f32], [f32::NAN]];
        let err = normalize_rows(bad.view(), 0.0, "e").expect_err("nan");
        assert!(err.to_string().contains("e row 1"));
    }
}
