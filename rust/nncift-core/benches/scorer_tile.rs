//! The scorer's fused tile kernel: `w . relu(P_i + Q_j) + ...` for one `ROW_CHUNK x TILE_COLS`
//! tile (64 x 512 pairs) of a one-hidden-layer network, with and without the cosine feature,
//! on the detected instruction set and on the generic fallback.
//!
//! `cargo bench -p nncift-core --bench scorer_tile`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nncift_core::scorer::kernel::{fused_tile, pack_blocks, FusedTile, Isa};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const ROWS: usize = 64;
const COLS: usize = 512;

fn uniform(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        .collect()
}

fn bench_tile(c: &mut Criterion) {
    let mut group = c.benchmark_group("scorer_fused_tile");
    group.throughput(Throughput::Elements((ROWS * COLS) as u64));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let detected = Isa::detect();
    let isas = if detected == Isa::Generic {
        vec![Isa::Generic]
    } else {
        vec![detected, Isa::Generic]
    };
    for h in [100usize, 256] {
        let p = uniform(&mut rng, ROWS * h);
        let q = uniform(&mut rng, COLS * h);
        let w = uniform(&mut rng, h);
        let wcos = uniform(&mut rng, h);
        let cos = uniform(&mut rng, ROWS * COLS);
        for &isa in &isas {
            for with_cos in [false, true] {
                let (mr, nr) = isa.block_shape(with_cos);
                let (mut pp, mut qp) = (Vec::new(), Vec::new());
                pack_blocks(ROWS, h, mr, |i| &p[i * h..(i + 1) * h], &mut pp);
                pack_blocks(COLS, h, nr, |j| &q[j * h..(j + 1) * h], &mut qp);
                let tile = FusedTile {
                    h,
                    w: &w,
                    wcos: with_cos.then_some(&wcos[..]),
                    pp: &pp,
                    qp: &qp,
                    n_rows: ROWS,
                    n_cols: COLS,
                    cos: with_cos.then_some(&cos[..]),
                };
                let mut out = vec![0f32; ROWS * COLS];
                let id = format!("{}/h{h}{}", isa.name(), if with_cos { "/cos" } else { "" });
                group.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| {
                        fused_tile(isa, std::hint::black_box(&tile), &mut out, COLS);
                        std::hint::black_box(&out);
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_tile);
criterion_main!(benches);
