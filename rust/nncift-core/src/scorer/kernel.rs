//! The fused pair kernel `sum_h w_h * relu(P[i, h] + Q[j, h] (+ wc_h * cos_ij))`.
//!
//! Layout: `P` is packed in blocks of `MR` rows as `[block][h][MR]` and `Q` in blocks of `NR`
//! columns as `[block][h][NR]`, so the micro-kernel streams both linearly and keeps an
//! `MR x NR` block of accumulators in vector registers: per hidden unit it loads one row of
//! `NR` column values, broadcasts `MR` row values, and updates all `MR * NR` pairs. The loops
//! are written over fixed-size arrays so that LLVM vectorises them; the ISA-specific entry
//! points below only re-compile the same generic code with `avx2`/`avx512f` enabled and are
//! chosen at run time (`is_x86_feature_detected!`), so the wheel needs no `-C target-cpu`.
//!
//! Every pair's sum runs over `h` in the same order whatever the tile, block or thread, so
//! results do not depend on tiling or on the number of threads.

use crate::error::{CoreError, CoreResult};

/// The instruction set the kernels were compiled for, detected once per scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + VL: 32 vector registers (the kernel uses 256-bit operations, see
    /// `fused_avx512`).
    Avx512,
    /// AVX2 + FMA (8 lanes, 16 registers).
    Avx2,
    /// Portable Rust (whatever SSE the baseline target has).
    Generic,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Generic => "generic",
        }
    }

    /// The instruction set named `name` ("avx512", "avx2", "generic"), or the best this
    /// CPU has for `None` (forcing one is for tests and benchmarks).
    pub fn from_name(name: Option<&str>) -> CoreResult<Isa> {
        match name {
            None => Ok(Isa::detect()),
            Some("avx512") => Ok(Isa::Avx512),
            Some("avx2") => Ok(Isa::Avx2),
            Some("generic") => Ok(Isa::Generic),
            Some(other) => Err(CoreError::Value(format!(
                "isa must be 'avx512', 'avx2' or 'generic', got {other:?}"
            ))),
        }
    }

    /// `(MR, NR)`: the register block of the micro-kernel. With the cosine feature each
    /// pair also needs its cosine in a register, so the row block is halved.
    pub fn block_shape(self, with_cos: bool) -> (usize, usize) {
        let (mr, nr) = match self {
            Isa::Avx512 => (8, 16),
            Isa::Avx2 => (4, 16),
            Isa::Generic => (4, 8),
        };
        if with_cos {
            (mr / 2, nr)
        } else {
            (mr, nr)
        }
    }
}

/// One tile of the fused kernel.
pub struct FusedTile<'a> {
    /// Hidden units `h` (after dropping units whose output weight is zero).
    pub h: usize,
    /// `(h,)` output weights.
    pub w: &'a [f32],
    /// `(h,)` first-layer weights of the cosine feature, when the network has it.
    pub wcos: Option<&'a [f32]>,
    /// Packed row blocks `[ceil(n_rows / MR)][h][MR]`.
    pub pp: &'a [f32],
    /// Packed column blocks `[ceil(n_cols / NR)][h][NR]`.
    pub qp: &'a [f32],
    pub n_rows: usize,
    pub n_cols: usize,
    /// Cosines `(n_rows, n_cols)`, row stride `n_cols`, when `wcos` is given.
    pub cos: Option<&'a [f32]>,
}

/// Write `sum_h w_h relu(...)` for every pair of the tile into `out[r * stride + c]`.
///
/// `pp` / `qp` must be packed with `isa.block_shape(tile.wcos.is_some())`.
pub fn fused_tile(isa: Isa, t: &FusedTile<'_>, out: &mut [f32], stride: usize) {
    debug_assert!(t.wcos.is_none() || t.cos.is_some());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only produced by `detect` after checking these features.
        Isa::Avx512 => unsafe { fused_avx512(t, out, stride) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for avx2 + fma.
        Isa::Avx2 => unsafe { fused_avx2(t, out, stride) },
        _ => fused_generic(t, out, stride),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn fused_avx512(t: &FusedTile<'_>, out: &mut [f32], stride: usize) {
    // 256-bit intrinsics compiled with AVX-512VL: 32 vector registers allow an 8 x 16 block
    // (16 accumulators). 512-bit intrinsics need Rust 1.89 (the workspace MSRV is 1.85); on
    // CPUs that split 512-bit operations into two halves (AMD Zen 4) the peak is the same.
    if t.wcos.is_some() {
        run_tile_with::<4, 16, true>(t, out, stride, |w, wc, p, q, cb, acc| {
            // SAFETY: avx2 + fma are enabled on this function; lengths checked by run_tile_with.
            unsafe { x86::micro256::<4, true>(w, wc, p, q, cb, acc) }
        })
    } else {
        run_tile_with::<8, 16, false>(t, out, stride, |w, wc, p, q, cb, acc| {
            // SAFETY: as above.
            unsafe { x86::micro256::<8, false>(w, wc, p, q, cb, acc) }
        })
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fused_avx2(t: &FusedTile<'_>, out: &mut [f32], stride: usize) {
    if t.wcos.is_some() {
        run_tile_with::<2, 16, true>(t, out, stride, |w, wc, p, q, cb, acc| {
            // SAFETY: avx2 + fma are enabled on this function; lengths checked by run_tile_with.
            unsafe { x86::micro256::<2, true>(w, wc, p, q, cb, acc) }
        })
    } else {
        run_tile_with::<4, 16, false>(t, out, stride, |w, wc, p, q, cb, acc| {
            // SAFETY: as above.
            unsafe { x86::micro256::<4, false>(w, wc, p, q, cb, acc) }
        })
    }
}

fn fused_generic(t: &FusedTile<'_>, out: &mut [f32], stride: usize) {
    if t.wcos.is_some() {
        run_tile_with::<2, 8, true>(t, out, stride, micro::<2, 8, true>)
    } else {
        run_tile_with::<4, 8, false>(t, out, stride, micro::<4, 8, false>)
    }
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    // Written as a compare-select (not f32::max) so it lowers to one `vmaxps`.
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

#[inline(always)]
fn run_tile_with<const MR: usize, const NR: usize, const COS: bool>(
    t: &FusedTile<'_>,
    out: &mut [f32],
    stride: usize,
    micro: impl Fn(&[f32], &[f32], &[f32], &[f32], &[[f32; NR]; MR], &mut [[f32; NR]; MR]),
) {
    let h = t.h;
    let n_rb = t.n_rows.div_ceil(MR);
    let n_cb = t.n_cols.div_ceil(NR);
    // The micro-kernels read exactly these ranges; check once here, not per hidden unit.
    assert!(t.w.len() >= h && t.pp.len() >= n_rb * h * MR && t.qp.len() >= n_cb * h * NR);
    let wcos: &[f32] = if COS { t.wcos.unwrap_or(&[]) } else { &[] };
    assert!(!COS || (wcos.len() >= h && t.cos.is_some_and(|c| c.len() >= t.n_rows * t.n_cols)));
    let cos_all: &[f32] = t.cos.unwrap_or(&[]);
    let w = &t.w[..h];
    for rb in 0..n_rb {
        let pblk = &t.pp[rb * h * MR..(rb + 1) * h * MR];
        let r0 = rb * MR;
        let rows = MR.min(t.n_rows - r0);
        for cb in 0..n_cb {
            let qblk = &t.qp[cb * h * NR..(cb + 1) * h * NR];
            let c0 = cb * NR;
            let cols = NR.min(t.n_cols - c0);
            let mut cosb = [[0f32; NR]; MR];
            if COS {
                for (r, cr) in cosb.iter_mut().enumerate().take(rows) {
                    let src = &cos_all[(r0 + r) * t.n_cols + c0..][..cols];
                    cr[..cols].copy_from_slice(src);
                }
            }
            let mut acc = [[0f32; NR]; MR];
            micro(w, wcos, pblk, qblk, &cosb, &mut acc);
            for (r, ar) in acc.iter().enumerate().take(rows) {
                let dst = &mut out[(r0 + r) * stride + c0..][..cols];
                dst.copy_from_slice(&ar[..cols]);
            }
        }
    }
}

/// Portable micro-kernel (no FMA: `mul_add` would be a libm call without hardware FMA).
fn micro<const MR: usize, const NR: usize, const COS: bool>(
    w: &[f32],
    wcos: &[f32],
    pblk: &[f32],
    qblk: &[f32],
    cosb: &[[f32; NR]; MR],
    acc: &mut [[f32; NR]; MR],
) {
    for (k, (p, q)) in pblk.chunks_exact(MR).zip(qblk.chunks_exact(NR)).enumerate() {
        let wk = w[k];
        let wc = if COS { wcos[k] } else { 0.0 };
        for r in 0..MR {
            for c in 0..NR {
                let mut x = p[r] + q[c];
                if COS {
                    x += cosb[r][c] * wc;
                }
                acc[r][c] += relu(x) * wk;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Explicit AVX2 / AVX-512 micro-kernels: `MR` rows x (2 vectors of) columns of
    //! accumulators kept in registers across the whole hidden dimension.
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support avx2 and fma; `pblk.len() >= h * MR`, `qblk.len() >= h * 16`,
    /// `w.len() == h`, and `wcos.len() >= h` when `COS`.
    #[inline(always)]
    pub(super) unsafe fn micro256<const MR: usize, const COS: bool>(
        w: &[f32],
        wcos: &[f32],
        pblk: &[f32],
        qblk: &[f32],
        cosb: &[[f32; 16]; MR],
        out: &mut [[f32; 16]; MR],
    ) {
        // SAFETY: the caller guarantees avx2 + fma and the slice lengths read below.
        unsafe {
            let zero = _mm256_setzero_ps();
            let mut acc = [[zero; 2]; MR];
            let mut cv = [[zero; 2]; MR];
            if COS {
                for r in 0..MR {
                    cv[r][0] = _mm256_loadu_ps(cosb[r].as_ptr());
                    cv[r][1] = _mm256_loadu_ps(cosb[r].as_ptr().add(8));
                }
            }
            let (pp, qp) = (pblk.as_ptr(), qblk.as_ptr());
            for k in 0..w.len() {
                let q0 = _mm256_loadu_ps(qp.add(k * 16));
                let q1 = _mm256_loadu_ps(qp.add(k * 16 + 8));
                let wk = _mm256_set1_ps(*w.get_unchecked(k));
                let wc = if COS {
                    _mm256_set1_ps(*wcos.get_unchecked(k))
                } else {
                    zero
                };
                for r in 0..MR {
                    let p = _mm256_set1_ps(*pp.add(k * MR + r));
                    let mut x0 = _mm256_add_ps(p, q0);
                    let mut x1 = _mm256_add_ps(p, q1);
                    if COS {
                        x0 = _mm256_fmadd_ps(cv[r][0], wc, x0);
                        x1 = _mm256_fmadd_ps(cv[r][1], wc, x1);
                    }
                    acc[r][0] = _mm256_fmadd_ps(_mm256_max_ps(x0, zero), wk, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(_mm256_max_ps(x1, zero), wk, acc[r][1]);
                }
            }
            for r in 0..MR {
                _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
                _mm256_storeu_ps(out[r].as_mut_ptr().add(8), acc[r][1]);
            }
        }
    }
}

/// Pack rows `src(i)` (each `h` long) for `i in 0..n` into `[ceil(n / mr)][h][mr]`,
/// zero-padding the last block, into `dst` (cleared first).
pub fn pack_blocks<'s>(
    n: usize,
    h: usize,
    mr: usize,
    src: impl Fn(usize) -> &'s [f32],
    dst: &mut Vec<f32>,
) {
    let nb = n.div_ceil(mr);
    dst.clear();
    dst.resize(nb * h * mr, 0.0);
    for i in 0..n {
        let (b, r) = (i / mr, i % mr);
        let row = src(i);
        let base = b * h * mr + r;
        for (k, v) in row.iter().enumerate().take(h) {
            dst[base + k * mr] = *v;
        }
    }
}
