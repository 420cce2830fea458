//! Property test of the scorer: on random weights (every pairwise layout, depth 1 to 3,
//! cosine feature and weight, bilinear term; quantised half the time so that ties and
//! all-zero ReLU rows are common) and random embeddings, dense, top-k and aggregate modes
//! agree with each other bit for bit, under the documented tie order (larger value, then
//! lower column index), for 1 and 2 threads, and `block` agrees with `dense`.

use std::sync::Arc;

use ndarray::{Array1, Array2};
use nncift_core::scorer::{Aggregate, Kind, Layout, NetworkMeta, NetworkWeights, Scorer};
use nncift_core::PairwiseSource;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

#[derive(Debug, Clone)]
struct Case {
    layout: Layout,
    d: usize,
    hidden: Vec<usize>,
    cos_feature: bool,
    cos_weight: bool,
    rank: Option<usize>,
    /// Weight values, cycled through every tensor.
    values: Vec<f32>,
    m: usize,
    n: usize,
    /// Embedding values, cycled (rows then columns).
    emb: Vec<f32>,
    k: usize,
    groups: usize,
}

fn values(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        proptest::collection::vec(-1.0f32..1.0, len.clone()),
        proptest::collection::vec((-2i8..=2).prop_map(|q| f32::from(q) * 0.5), len),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(vec![Layout::Paper, Layout::Concat]),
        1usize..6,
        proptest::collection::vec(1usize..9, 0..3),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1usize..3),
        values(1..97),
        1usize..80,
        // Past one tile of columns (512) now and then.
        prop_oneof![4 => 1usize..70, 1 => 500usize..530],
        values(1..61),
        1usize..8,
        1usize..5,
    )
        .prop_map(
            |(layout, d, hidden, cos_feature, cos_weight, rank, values, m, n, emb, k, groups)| {
                Case {
                    layout,
                    d,
                    hidden,
                    cos_feature,
                    cos_weight,
                    rank,
                    values,
                    m,
                    n,
                    emb,
                    k,
                    groups,
                }
            },
        )
}

fn build(c: &Case) -> (Arc<Scorer>, Array2<f32>, Array2<f32>) {
    let mut at = 0usize;
    let mut take = |vals: &[f32]| {
        at += 1;
        // A stride coprime to most lengths, so tensors do not repeat each other.
        vals[(at * 7919) % vals.len()]
    };
    let mut in_dim = c.layout.input_dim(c.d) + usize::from(c.cos_feature);
    let mut layers = Vec::new();
    for &h in c.hidden.iter().chain(std::iter::once(&1)) {
        let w = Array2::from_shape_fn((h, in_dim), |_| take(&c.values));
        let b = Array1::from_shape_fn(h, |_| take(&c.values));
        layers.push((w, b));
        in_dim = h;
    }
    let cos_weight = c.cos_weight.then(|| take(&c.values));
    let bil = c.rank.map(|r| {
        (
            Array2::from_shape_fn((r, c.d), |_| take(&c.values)),
            Array2::from_shape_fn((r, c.d), |_| take(&c.values)),
        )
    });
    let meta = NetworkMeta {
        kind: Kind::Pairwise,
        layout: c.layout,
        cosine_feature: c.cos_feature,
        embedding_dim: c.d,
        embedding_model: "test".into(),
        label_scale: 1.5,
        label_offset: -0.25,
        label_name: None,
    };
    let net = NetworkWeights::new(layers, cos_weight, bil, meta).expect("valid weights");
    let rows = Array2::from_shape_fn((c.m, c.d), |_| take(&c.emb));
    let cols = Array2::from_shape_fn((c.n, c.d), |_| take(&c.emb));
    (Arc::new(Scorer::new(net)), rows, cols)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7363_6f72_6572),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn dense_topk_and_aggregates_agree(c in case()) {
        let (scorer, rows, cols) = build(&c);
        let b1 = scorer.bind(rows.view(), cols.view(), 1).expect("bind");
        let b2 = scorer.bind(rows.view(), cols.view(), 2).expect("bind");
        let dense = b1.dense(1).expect("dense");
        prop_assert!(dense.iter().all(|v| v.is_finite()));
        prop_assert_eq!(&dense, &b2.dense(2).expect("dense"));
        let k = c.k.min(c.n);
        let (idx, val) = b1.topk(k, 1).expect("topk");
        let (idx2, val2) = b2.topk(k, 2).expect("topk");
        prop_assert_eq!(&idx, &idx2);
        prop_assert_eq!(
            val.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            val2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let groups: Vec<usize> = (0..c.n).map(|j| j % c.groups.min(c.n)).collect();
        let mean = b2.aggregate(Aggregate::Mean, None, 2).expect("mean");
        let max = b1.aggregate(Aggregate::Max, None, 1).expect("max");
        let mm = b2.aggregate(Aggregate::MeanMax, Some(&groups), 2).expect("mean-max");
        for i in 0..c.m {
            let r = dense.row(i);
            // The documented order: larger value first (total order), then lower index.
            let mut order: Vec<usize> = (0..c.n).collect();
            order.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
            let want: Vec<i64> = order[..k].iter().map(|&j| j as i64).collect();
            prop_assert_eq!(&idx[i * k..(i + 1) * k], want.as_slice(), "row {}", i);
            for (a, &j) in order[..k].iter().enumerate() {
                prop_assert_eq!(val[i * k + a].to_bits(), r[j].to_bits());
            }
            // Means accumulate in f64 in column order: the same bits from the dense row.
            let m = (r.iter().map(|&v| f64::from(v)).sum::<f64>() / c.n as f64) as f32;
            prop_assert_eq!(mean[i].to_bits(), m.to_bits(), "mean row {}", i);
            // The maximum is the first top-k value (equal; -0.0 == 0.0).
            prop_assert_eq!(max[i], val[i * k]);
            let g = c.groups.min(c.n);
            let mut best = f64::NEG_INFINITY;
            for gi in 0..g {
                let (s, cnt) = r.iter().zip(&groups).filter(|(_, &x)| x == gi)
                    .fold((0f64, 0f64), |(s, n), (&v, _)| (s + f64::from(v), n + 1.0));
                best = best.max(s / cnt);
            }
            prop_assert_eq!(mm[i].to_bits(), (best as f32).to_bits(), "mean-max row {}", i);
        }
        // Any block of pairs, through the on-the-fly interface, has the dense bits.
        let r_idx: Vec<usize> = (0..c.m).rev().step_by(3).collect();
        let c_idx: Vec<usize> = (0..c.n).map(|j| (j * 5 + 1) % c.n).collect();
        let mut blk = vec![0f32; r_idx.len() * c_idx.len()];
        b2.block(&r_idx, &c_idx, &mut blk).expect("block");
        for (a, &i) in r_idx.iter().enumerate() {
            for (bb, &j) in c_idx.iter().enumerate() {
                prop_assert_eq!(blk[a * c_idx.len() + bb].to_bits(), dense[[i, j]].to_bits());
            }
        }
    }
}
