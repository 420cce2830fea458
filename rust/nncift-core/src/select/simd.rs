//! Hot inner loops of the coverage functions, vectorised.
//!
//! Each loop is written once, over fixed arrays of [`LANES`] accumulators, and
//! compiled twice: for the baseline target and, behind a runtime
//! `is_x86_feature_detected!("avx2")` check, with AVX2 enabled. Rust never
//! reassociates or contracts floating-point operations, so both builds perform
//! exactly the same operations in the same order: the results are bit-identical
//! whichever one runs (and for any thread count, as each call is sequential).
//!
//! Arithmetic: each term is computed in `f32` (as submodlib does), widened to
//! `f64` and accumulated in `LANES` independent `f64` lanes (enough independent
//! chains to hide add latency), then combined by a fixed pairwise tree; the
//! `len % LANES` tail is added sequentially at the end.

/// Independent accumulators per loop (4 AVX2 registers of 8 floats, 8 of 4 doubles).
const LANES: usize = 32;

#[inline(always)]
fn combine(mut acc: [f64; LANES]) -> f64 {
    let mut w = LANES / 2;
    while w >= 1 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `max(x, 0)` written as the compare-select that maps onto one `maxps`
/// (inputs are validated finite, so NaN handling is irrelevant here).
#[inline(always)]
fn pos(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

#[inline(always)]
fn fl_gain_body(row: &[f32], best: &[f32]) -> f64 {
    let n = row.len().min(best.len());
    let (row, best) = (&row[..n], &best[..n]);
    let mut acc = [0f64; LANES];
    let rc = row.chunks_exact(LANES);
    let bc = best.chunks_exact(LANES);
    let (rr, br) = (rc.remainder(), bc.remainder());
    for (r, b) in rc.zip(bc) {
        for l in 0..LANES {
            acc[l] += f64::from(pos(r[l] - b[l]));
        }
    }
    let mut g = combine(acc);
    for (r, b) in rr.iter().zip(br) {
        g += f64::from(pos(r - b));
    }
    g
}

#[inline(always)]
fn flmi_term(v: f32, b: f32, q: f32) -> f32 {
    // min(max(b, v), q) - min(b, q), in f32; operands finite.
    let hi = if v > b { v } else { b };
    let hi = if hi < q { hi } else { q };
    let lo = if b < q { b } else { q };
    hi - lo
}

#[inline(always)]
fn flmi_gain_body(row: &[f32], best: &[f32], cap: &[f32]) -> f64 {
    let n = row.len().min(best.len()).min(cap.len());
    let (row, best, cap) = (&row[..n], &best[..n], &cap[..n]);
    let mut acc = [0f64; LANES];
    let full = n / LANES * LANES;
    for ((r, b), q) in row[..full]
        .chunks_exact(LANES)
        .zip(best[..full].chunks_exact(LANES))
        .zip(cap[..full].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += f64::from(flmi_term(r[l], b[l], q[l]));
        }
    }
    let mut g = combine(acc);
    for t in full..n {
        g += f64::from(flmi_term(row[t], best[t], cap[t]));
    }
    g
}

/// Whether any value is outside `[0, hi]` or not a number (NaN fails both
/// comparisons; `hi = f32::MAX` also rejects `+inf`).
#[inline(always)]
fn any_outside_body(row: &[f32], hi: f32) -> bool {
    let mut bad = [0u32; LANES];
    let rc = row.chunks_exact(LANES);
    let rr = rc.remainder();
    for r in rc {
        for l in 0..LANES {
            bad[l] |= u32::from(!(r[l] >= 0.0 && r[l] <= hi));
        }
    }
    bad.iter().any(|&b| b != 0) || rr.iter().any(|&v| !(v >= 0.0 && v <= hi))
}

#[inline(always)]
fn max_into_body(best: &mut [f32], row: &[f32]) {
    for (b, &v) in best.iter_mut().zip(row) {
        *b = if v > *b { v } else { *b };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    // SAFETY (all functions): callers check `is_x86_feature_detected!("avx2")`
    // before calling; the bodies are safe Rust.
    #[target_feature(enable = "avx2")]
    pub unsafe fn fl_gain(row: &[f32], best: &[f32]) -> f64 {
        super::fl_gain_body(row, best)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn flmi_gain(row: &[f32], best: &[f32], cap: &[f32]) -> f64 {
        super::flmi_gain_body(row, best, cap)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn any_outside(row: &[f32], hi: f32) -> bool {
        super::any_outside_body(row, hi)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_into(best: &mut [f32], row: &[f32]) {
        super::max_into_body(best, row)
    }
}

#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Facility-location gain `sum_t max(row[t] - best[t], 0)` over the common length.
#[inline]
pub fn fl_gain(row: &[f32], best: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked above).
        return unsafe { avx2::fl_gain(row, best) };
    }
    fl_gain_body(row, best)
}

/// FLMI gain `sum_t min(max(best, v), cap) - min(best, cap)`, per term in f32.
#[inline]
pub fn flmi_gain(row: &[f32], best: &[f32], cap: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked above).
        return unsafe { avx2::flmi_gain(row, best, cap) };
    }
    flmi_gain_body(row, best, cap)
}

/// True when some value of `row` is NaN, infinite, negative or above `hi`.
#[inline]
pub fn any_outside(row: &[f32], hi: f32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked above).
        return unsafe { avx2::any_outside(row, hi) };
    }
    any_outside_body(row, hi)
}

/// `best[t] = max(best[t], row[t])` over the common length (finite inputs).
#[inline]
pub fn max_into(best: &mut [f32], row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked above).
        return unsafe { avx2::max_into(best, row) };
    }
    max_into_body(best, row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32
            })
            .collect()
    }

    #[test]
    fn dispatched_and_portable_loops_agree_bit_for_bit() {
        for n in [0, 1, 31, 32, 33, 100, 1000, 4099] {
            let (r, b, q) = (data(n, 1), data(n, 2), data(n, 3));
            assert_eq!(fl_gain(&r, &b).to_bits(), fl_gain_body(&r, &b).to_bits());
            assert_eq!(
                flmi_gain(&r, &b, &q).to_bits(),
                flmi_gain_body(&r, &b, &q).to_bits()
            );
            let naive: f64 = r
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from((x - y).max(0.0)))
                .sum();
            assert!((fl_gain(&r, &b) - naive).abs() <= 1e-9 * (1.0 + naive));
            let mut m1 = b.clone();
            let mut m2 = b.clone();
            max_into(&mut m1, &r);
            max_into_body(&mut m2, &r);
            assert_eq!(m1, m2);
            assert!(m1.iter().zip(&r).all(|(m, x)| m >= x));
        }
    }

    #[test]
    fn any_outside_finds_every_kind_of_bad_value() {
        let mut r = data(1000, 5);
        assert!(!any_outside(&r, 1.0));
        for (pos, bad) in [(0, f32::NAN), (999, -0.5), (500, f32::INFINITY), (37, 1.5)] {
            let keep = r[pos];
            r[pos] = bad;
            assert!(any_outside(&r, 1.0), "{bad} at {pos}");
            assert_eq!(any_outside(&r, f32::MAX), bad != 1.5, "{bad} at {pos}");
            r[pos] = keep;
        }
    }
}
