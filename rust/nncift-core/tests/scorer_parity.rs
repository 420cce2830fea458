//! Brute-force parity of the factorised scorer against a plain float64 forward pass of the
//! same network on the concatenated input, for every layout, depth and extra term; plus
//! determinism across thread counts and agreement of dense, block, top-k and aggregates.

use std::sync::Arc;

use ndarray::{Array1, Array2};
use nncift_core::scorer::kernel::Isa;
use nncift_core::scorer::{Aggregate, Kind, Layout, NetworkMeta, NetworkWeights, Scorer};
use nncift_core::{CoreError, PairwiseSource};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn mat(&mut self, r: usize, c: usize, s: f32) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |_| self.next() * s)
    }
    fn vec(&mut self, n: usize, s: f32) -> Array1<f32> {
        Array1::from_shape_fn(n, |_| self.next() * s)
    }
}

struct Spec {
    layout: Layout,
    hidden: Vec<usize>,
    cos_feature: bool,
    cos_weight: Option<f32>,
    rank: Option<usize>,
    scale: f64,
    offset: f64,
}

fn make_net(spec: &Spec, d: usize, rng: &mut Rng) -> NetworkWeights {
    let mut in_dim = spec.layout.input_dim(d) + usize::from(spec.cos_feature);
    let mut layers = Vec::new();
    for &h in spec.hidden.iter().chain(std::iter::once(&1)) {
        let s = 1.0 / (in_dim as f32).sqrt();
        layers.push((rng.mat(h, in_dim, s), rng.vec(h, s)));
        in_dim = h;
    }
    let bil = spec.rank.map(|r| (rng.mat(r, d, 0.3), rng.mat(r, d, 0.3)));
    let kind = if spec.layout == Layout::Pointwise {
        Kind::Pointwise
    } else {
        Kind::Pairwise
    };
    let meta = NetworkMeta {
        kind,
        layout: spec.layout,
        cosine_feature: spec.cos_feature,
        embedding_dim: d,
        embedding_model: "test".into(),
        label_scale: spec.scale,
        label_offset: spec.offset,
        label_name: None,
    };
    NetworkWeights::new(layers, spec.cos_weight, bil, meta).expect("valid weights")
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    dot / (na * nb)
}

/// The network on the concatenated input, in f64, exactly as docs/weights.md writes it.
fn reference(net: &NetworkWeights, ei: &[f32], ej: Option<&[f32]>) -> f64 {
    let ei: Vec<f64> = ei.iter().map(|&v| f64::from(v)).collect();
    let ej: Option<Vec<f64>> = ej.map(|e| e.iter().map(|&v| f64::from(v)).collect());
    let mut x = ei.clone();
    if let Some(ej) = &ej {
        if net.layout() == Layout::Paper {
            x.push(0.0);
        }
        x.extend(ej);
        if net.cosine_feature() {
            x.push(cosine(&ei, ej));
        }
    }
    for k in 0..net.depth() {
        let (w, b) = net.layer(k).expect("layer");
        let mut y: Vec<f64> = (0..w.nrows())
            .map(|o| {
                f64::from(b[o])
                    + (0..w.ncols())
                        .map(|i| f64::from(w[[o, i]]) * x[i])
                        .sum::<f64>()
            })
            .collect();
        if k + 1 < net.depth() {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        x = y;
    }
    let mut raw = x[0];
    if let Some(ej) = &ej {
        if let Some(c) = net.cosine_weight() {
            raw += f64::from(c) * cosine(&ei, ej);
        }
        if let Some((u, v)) = net.bilinear_ref() {
            let ue = u.rows().into_iter().map(|r| {
                r.iter()
                    .zip(&ei)
                    .map(|(a, b)| f64::from(*a) * b)
                    .sum::<f64>()
            });
            let ve: Vec<f64> = v
                .rows()
                .into_iter()
                .map(|r| r.iter().zip(ej).map(|(a, b)| f64::from(*a) * b).sum())
                .collect();
            raw += ue.zip(&ve).map(|(a, b)| a * b).sum::<f64>();
        }
    }
    raw * net.label_scale() + net.label_offset()
}

fn specs() -> Vec<Spec> {
    let base = |layout, hidden: Vec<usize>| Spec {
        layout,
        hidden,
        cos_feature: false,
        cos_weight: None,
        rank: None,
        scale: 1.0,
        offset: 0.0,
    };
    let mut v = Vec::new();
    for layout in [Layout::Paper, Layout::Concat] {
        for hidden in [
            vec![],
            vec![37],
            vec![100],
            vec![24, 9],
            vec![16, 12, 8],
            vec![10, 9, 8, 7],
        ] {
            v.push(base(layout, hidden));
        }
    }
    v.push(Spec {
        cos_feature: true,
        ..base(Layout::Paper, vec![33])
    });
    v.push(Spec {
        cos_feature: true,
        ..base(Layout::Concat, vec![20, 6])
    });
    v.push(Spec {
        cos_feature: true,
        ..base(Layout::Concat, vec![])
    });
    v.push(Spec {
        cos_weight: Some(0.7),
        ..base(Layout::Paper, vec![40])
    });
    v.push(Spec {
        rank: Some(5),
        ..base(Layout::Concat, vec![40])
    });
    v.push(Spec {
        cos_feature: true,
        cos_weight: Some(-0.4),
        rank: Some(3),
        scale: 2.5,
        offset: -0.25,
        ..base(Layout::Paper, vec![50, 10])
    });
    v
}

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn dense_matches_reference_forward_for_every_variant() {
    let (d, m, n) = (13, 21, 75);
    for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for spec in specs() {
            let net = make_net(&spec, d, &mut rng);
            let rows = rng.mat(m, d, 1.0);
            let cols = rng.mat(n, d, 1.0);
            let scorer = Arc::new(Scorer::with_isa(net.clone(), isa));
            let dense = scorer.score(rows.view(), cols.view(), 2).expect("score");
            let want: Vec<f64> = (0..m)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| {
                    reference(
                        &net,
                        rows.row(i).as_slice().expect("c"),
                        Some(cols.row(j).as_slice().expect("c")),
                    )
                })
                .collect();
            let err = rel_err(dense.as_slice().expect("c"), &want);
            assert!(
                err <= 1e-5,
                "isa {isa:?} layout {:?} hidden {:?} cos {} {:?} rank {:?}: rel err {err:e}",
                spec.layout,
                spec.hidden,
                spec.cos_feature,
                spec.cos_weight,
                spec.rank
            );
        }
    }
}

#[test]
fn pointwise_matches_reference_forward() {
    let d = 11;
    let mut rng = Rng(7);
    for hidden in [vec![], vec![30], vec![8, 7], vec![6, 5, 4, 3]] {
        let spec = Spec {
            layout: Layout::Pointwise,
            hidden,
            cos_feature: false,
            cos_weight: None,
            rank: None,
            scale: 0.5,
            offset: 3.0,
        };
        let net = make_net(&spec, d, &mut rng);
        let rows = rng.mat(300, d, 1.0);
        let got = Scorer::new(net.clone())
            .pointwise(rows.view(), 2)
            .expect("pointwise");
        let want: Vec<f64> = (0..300)
            .map(|i| reference(&net, rows.row(i).as_slice().expect("c"), None))
            .collect();
        assert!(rel_err(got.as_slice().expect("c"), &want) <= 1e-5);
        let one = Scorer::new(net)
            .pointwise(rows.view(), 1)
            .expect("pointwise");
        assert_eq!(got, one);
    }
}

fn big_case(spec: &Spec, seed: u64) -> (Arc<Scorer>, Array2<f32>, Array2<f32>) {
    let d = 24;
    let mut rng = Rng(seed);
    let net = make_net(spec, d, &mut rng);
    // Sizes that are not multiples of any tile or register block.
    (
        Arc::new(Scorer::new(net)),
        rng.mat(203, d, 1.0),
        rng.mat(1037, d, 1.0),
    )
}

#[test]
fn identical_across_thread_counts_and_paths() {
    for spec in specs().into_iter().filter(|s| s.hidden.len() < 3) {
        let (scorer, rows, cols) = big_case(&spec, 42);
        let b1 = scorer.bind(rows.view(), cols.view(), 1).expect("bind");
        let b2 = scorer.bind(rows.view(), cols.view(), 2).expect("bind");
        let d1 = b1.dense(1).expect("dense");
        let d2 = b2.dense(2).expect("dense");
        assert_eq!(
            d1, d2,
            "dense differs between 1 and 2 threads ({:?})",
            spec.hidden
        );
        // Arbitrary, unsorted, repeated indices through the PairwiseSource interface.
        let r_idx = [202, 0, 5, 5, 131, 64, 63];
        let c_idx: Vec<usize> = (0..700).map(|k| (k * 389 + 11) % 1037).collect();
        let mut blk = vec![0f32; r_idx.len() * c_idx.len()];
        b2.block(&r_idx, &c_idx, &mut blk).expect("block");
        for (a, &i) in r_idx.iter().enumerate() {
            for (b, &j) in c_idx.iter().enumerate() {
                assert_eq!(blk[a * c_idx.len() + b].to_bits(), d1[[i, j]].to_bits());
            }
        }
        let mut row = vec![0f32; 1037];
        b1.row(77, &mut row).expect("row");
        assert_eq!(row.as_slice(), d1.row(77).as_slice().expect("c"));
    }
}

#[test]
fn topk_and_aggregates_agree_with_dense() {
    let spec = Spec {
        layout: Layout::Paper,
        hidden: vec![30],
        cos_feature: false,
        cos_weight: None,
        rank: None,
        scale: 1.0,
        offset: 0.0,
    };
    let (scorer, rows, cols) = big_case(&spec, 5);
    let b = scorer.bind(rows.view(), cols.view(), 2).expect("bind");
    let dense = b.dense(2).expect("dense");
    let k = 17;
    let (idx, val) = b.topk(k, 2).expect("topk");
    let (idx1, val1) = b.topk(k, 1).expect("topk");
    assert_eq!((&idx, &val), (&idx1, &val1));
    for i in 0..dense.nrows() {
        let mut order: Vec<usize> = (0..dense.ncols()).collect();
        order.sort_by(|&a, &c| dense[[i, c]].total_cmp(&dense[[i, a]]).then(a.cmp(&c)));
        let want: Vec<i64> = order[..k].iter().map(|&j| j as i64).collect();
        assert_eq!(&idx[i * k..(i + 1) * k], want.as_slice());
        for (a, &j) in order[..k].iter().enumerate() {
            assert_eq!(val[i * k + a], dense[[i, j]]);
        }
    }
    let groups: Vec<usize> = (0..dense.ncols()).map(|j| (j * 7) % 4).collect();
    let mean = b.aggregate(Aggregate::Mean, None, 2).expect("mean");
    let max = b.aggregate(Aggregate::Max, None, 1).expect("max");
    let mm = b
        .aggregate(Aggregate::MeanMax, Some(&groups), 2)
        .expect("mean-max");
    for i in 0..dense.nrows() {
        let r = dense.row(i);
        let m: f64 = r.iter().map(|&v| f64::from(v)).sum::<f64>() / r.len() as f64;
        assert!((f64::from(mean[i]) - m).abs() <= 1e-6 * (1.0 + m.abs()));
        assert_eq!(max[i], r.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let mut best = f64::NEG_INFINITY;
        for g in 0..4 {
            let vals: Vec<f64> = r
                .iter()
                .zip(&groups)
                .filter(|(_, &gg)| gg == g)
                .map(|(&v, _)| f64::from(v))
                .collect();
            best = best.max(vals.iter().sum::<f64>() / vals.len() as f64);
        }
        assert!((f64::from(mm[i]) - best).abs() <= 1e-6 * (1.0 + best.abs()));
    }
}

#[test]
fn ties_break_to_the_lowest_index() {
    // Identical columns give identical scores: top-k must list them in index order.
    let spec = Spec {
        layout: Layout::Concat,
        hidden: vec![8],
        cos_feature: false,
        cos_weight: None,
        rank: None,
        scale: 1.0,
        offset: 0.0,
    };
    let mut rng = Rng(3);
    let net = make_net(&spec, 4, &mut rng);
    let rows = rng.mat(3, 4, 1.0);
    let one = rng.mat(1, 4, 1.0);
    let cols = Array2::from_shape_fn((600, 4), |(_, c)| one[[0, c]]);
    let b = Arc::new(Scorer::new(net))
        .bind(rows.view(), cols.view(), 2)
        .expect("bind");
    let (idx, _) = b.topk(5, 2).expect("topk");
    assert_eq!(&idx[..5], &[0, 1, 2, 3, 4]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let spec = Spec {
        layout: Layout::Paper,
        hidden: vec![8],
        cos_feature: false,
        cos_weight: None,
        rank: None,
        scale: 1.0,
        offset: 0.0,
    };
    let mut rng = Rng(1);
    let scorer = Arc::new(Scorer::new(make_net(&spec, 6, &mut rng)));
    let good = rng.mat(4, 6, 1.0);
    let wrong_d = rng.mat(4, 5, 1.0);
    assert!(matches!(
        scorer.bind(good.view(), wrong_d.view(), 1),
        Err(CoreError::Shape(_))
    ));
    let empty = Array2::<f32>::zeros((0, 6));
    assert!(matches!(
        scorer.bind(empty.view(), good.view(), 1),
        Err(CoreError::Value(_))
    ));
    let mut nan = good.clone();
    nan[[2, 3]] = f32::NAN;
    let err = scorer.bind(good.view(), nan.view(), 1).expect_err("nan");
    assert!(err.to_string().contains("row 2"), "{err}");
    let b = scorer.bind(good.view(), good.view(), 1).expect("bind");
    assert!(matches!(b.topk(0, 1), Err(CoreError::Value(_))));
    assert!(matches!(b.topk(5, 1), Err(CoreError::Value(_))));
    let mut out = vec![0f32; 3];
    assert!(b.block(&[0], &[9], &mut out[..1]).is_err());
    assert!(b.block(&[0, 1], &[0, 1], &mut out).is_err());
    assert!(matches!(
        b.aggregate(Aggregate::MeanMax, None, 1),
        Err(CoreError::Value(_))
    ));
    assert!(matches!(
        b.aggregate(Aggregate::MeanMax, Some(&[0, 2, 2, 2]), 1),
        Err(CoreError::Value(_))
    ));
    assert!(matches!(
        scorer.pointwise(good.view(), 1),
        Err(CoreError::Value(_))
    ));
    // A dense request far beyond memory is refused before allocating.
    assert!(matches!(
        nncift_core::scorer::check_dense_fits(usize::MAX / 8, 1 << 20),
        Err(CoreError::Memory(_))
    ));
}
