//! Brute-force parity of the selection engine: greedy by full re-evaluation of
//! f(A ∪ {j}) - f(A) against naive / lazy greedy with memoisation, sparse and
//! on-the-fly kernels against dense, and determinism across thread counts.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;

use ndarray::Array2;
use nncift_core::select::{
    self, CosineSource, CosineTransform, KernelSpec, Mode, Optimizer, Request, RunConfig,
    SetFunction,
};

/// Small deterministic generator (tests only).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
}

fn random_kernel(n: usize, m: usize, seed: u64) -> Array2<f32> {
    let mut g = Lcg(seed);
    Array2::from_shape_fn((n, m), |_| g.next())
}

fn symmetric_kernel(n: usize, seed: u64) -> Array2<f32> {
    let a = random_kernel(n, n, seed);
    Array2::from_shape_fn((n, n), |(i, j)| {
        if i == j {
            1.0
        } else {
            0.5 * (a[[i, j]] + a[[j, i]])
        }
    })
}

fn eval(f: &SetFunction, k: &Array2<f32>, side: Option<&Array2<f32>>, set: &[usize]) -> f64 {
    let m = k.ncols();
    match f {
        SetFunction::FacilityLocation => (0..m)
            .map(|t| {
                set.iter()
                    .map(|&j| f64::from(k[[j, t]]))
                    .fold(0.0, f64::max)
            })
            .sum(),
        SetFunction::Flmi { eta } => {
            let q = side.unwrap();
            (0..m)
                .map(|t| {
                    let cap = q
                        .row(t)
                        .iter()
                        .map(|&v| f64::from(v * eta))
                        .fold(0.0, f64::max);
                    set.iter()
                        .map(|&j| f64::from(k[[j, t]]))
                        .fold(0.0, f64::max)
                        .min(cap)
                })
                .sum()
        }
        SetFunction::Flcg { nu } => {
            let p = side.unwrap();
            (0..m)
                .map(|t| {
                    let fl = p
                        .row(t)
                        .iter()
                        .map(|&v| f64::from(v * nu))
                        .fold(0.0, f64::max);
                    (set.iter()
                        .map(|&j| f64::from(k[[j, t]]))
                        .fold(0.0, f64::max)
                        - fl)
                        .max(0.0)
                })
                .sum()
        }
        SetFunction::GraphCut { lambda } => {
            let l = f64::from(*lambda);
            let cover: f64 = set
                .iter()
                .map(|&j| k.row(j).iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum();
            let inner: f64 = set
                .iter()
                .flat_map(|&i| set.iter().map(move |&j| (i, j)))
                .map(|(i, j)| f64::from(k[[i, j]]))
                .sum();
            cover - l * inner
        }
        SetFunction::DisparitySum => {
            let mut s = 0.0;
            for (a, &i) in set.iter().enumerate() {
                for &j in &set[a + 1..] {
                    s += 1.0 - f64::from(k[[i, j]]);
                }
            }
            s
        }
        _ => unreachable!(),
    }
}

/// Greedy by full re-evaluation; exact ties (within 1e-9) go to the lower
/// tie rank of the engine's default order (seed 0), as the engine does.
fn brute_greedy(
    f: &SetFunction,
    k: &Array2<f32>,
    side: Option<&Array2<f32>>,
    budget: usize,
) -> Vec<usize> {
    let n = k.nrows();
    let rank = select::tie_ranks(n, 0);
    let mut set = Vec::new();
    for _ in 0..budget {
        let base = eval(f, k, side, &set);
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        for j in (0..n).filter(|j| !set.contains(j)) {
            let mut s2 = set.clone();
            s2.push(j);
            let g = eval(f, k, side, &s2) - base;
            let tie = (g - best.0).abs() <= 1e-9 && rank[j] < rank[best.1];
            if g > best.0 + 1e-9 || tie {
                best = (g, j);
            }
        }
        set.push(best.1);
    }
    set
}

fn run(
    f: SetFunction,
    k: &Array2<f32>,
    side: Option<&Array2<f32>>,
    budget: usize,
    opt: Optimizer,
    mode: Mode,
    n_jobs: usize,
) -> select::Outcome {
    let side_spec = side.map(|s| KernelSpec::Dense(s.view()));
    let (query, private) = match f {
        SetFunction::Flmi { .. } => (side_spec, None),
        SetFunction::Flcg { .. } => (None, side_spec),
        _ => (None, None),
    };
    let kernel = match mode {
        Mode::Dense => KernelSpec::Dense(k.view()),
        _ => KernelSpec::Source(Arc::new(select::OwnedDense(k.clone()))),
    };
    let req = Request {
        function: f,
        kernel: Some(kernel),
        query,
        private,
        quality: None,
        mode,
        greedi: None,
        run: RunConfig {
            optimizer: opt,
            count: budget,
            ..Default::default()
        },
    };
    select::run(&req, n_jobs).expect("selection runs")
}

#[test]
fn naive_and_lazy_match_brute_force_for_every_function() {
    for seed in 0..4u64 {
        let k = symmetric_kernel(40, seed);
        let side = random_kernel(40, 5, seed + 100);
        let funcs = [
            SetFunction::FacilityLocation,
            SetFunction::Flmi { eta: 0.8 },
            SetFunction::Flcg { nu: 0.9 },
            SetFunction::GraphCut { lambda: 0.3 },
            SetFunction::DisparitySum,
        ];
        for f in funcs {
            let s =
                matches!(f, SetFunction::Flmi { .. } | SetFunction::Flcg { .. }).then_some(&side);
            let budget = 8;
            let want = brute_greedy(&f, &k, s, budget);
            for opt in [Optimizer::Naive, Optimizer::Lazy] {
                let got = run(f.clone(), &k, s, budget, opt, Mode::Dense, 1);
                assert_eq!(got.selection.indices, want, "{f:?} {opt:?} seed {seed}");
                let obj = eval(&f, &k, s, &want);
                assert!(
                    (got.selection.objective - obj).abs() <= 1e-6 * obj.abs().max(1.0),
                    "{f:?}: {} vs {obj}",
                    got.selection.objective
                );
            }
        }
    }
}

#[test]
fn separate_represented_set_fl() {
    let k = random_kernel(30, 12, 7);
    let want = brute_greedy(&SetFunction::FacilityLocation, &k, None, 6);
    let got = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        6,
        Optimizer::Lazy,
        Mode::Dense,
        1,
    );
    assert_eq!(got.selection.indices, want);
}

#[test]
fn sparse_with_all_neighbours_and_on_the_fly_equal_dense() {
    let k = symmetric_kernel(60, 3);
    let dense = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        10,
        Optimizer::Lazy,
        Mode::Dense,
        1,
    );
    let sparse = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        10,
        Optimizer::Lazy,
        Mode::Sparse { k: 60 },
        2,
    );
    let fly = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        10,
        Optimizer::Lazy,
        Mode::OnTheFly,
        2,
    );
    assert_eq!(dense.selection.indices, sparse.selection.indices);
    assert_eq!(dense.selection.indices, fly.selection.indices);
    assert!((dense.selection.objective - sparse.selection.objective).abs() < 1e-9);
    let gc = SetFunction::GraphCut { lambda: 0.4 };
    let d = run(gc.clone(), &k, None, 10, Optimizer::Lazy, Mode::Dense, 1);
    let s = run(gc, &k, None, 10, Optimizer::Lazy, Mode::Sparse { k: 60 }, 2);
    assert_eq!(d.selection.indices, s.selection.indices);
}

#[test]
fn thread_counts_give_identical_bits_and_seeds_reproduce() {
    let k = symmetric_kernel(200, 11);
    for opt in [
        Optimizer::Lazy,
        Optimizer::Stochastic { epsilon: 0.1 },
        Optimizer::LazierThanLazy { epsilon: 0.1 },
    ] {
        let a = run(
            SetFunction::FacilityLocation,
            &k,
            None,
            20,
            opt,
            Mode::Dense,
            1,
        );
        let b = run(
            SetFunction::FacilityLocation,
            &k,
            None,
            20,
            opt,
            Mode::Dense,
            2,
        );
        let c = run(
            SetFunction::FacilityLocation,
            &k,
            None,
            20,
            opt,
            Mode::Dense,
            3,
        );
        // Evaluation counts may differ (batch size follows the thread count);
        // the chosen items, gains and objective may not, to the bit.
        for other in [&b, &c] {
            assert_eq!(a.selection.indices, other.selection.indices, "{opt:?}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a.selection.gains),
                bits(&other.selection.gains),
                "{opt:?}"
            );
            assert_eq!(
                a.selection.objective.to_bits(),
                other.selection.objective.to_bits()
            );
        }
        let again = run(
            SetFunction::FacilityLocation,
            &k,
            None,
            20,
            opt,
            Mode::Dense,
            2,
        );
        assert_eq!(again.selection.indices, b.selection.indices);
    }
}

#[test]
fn stochastic_and_lazier_than_lazy_agree_per_seed() {
    // Same sample stream, and lazier-than-lazy only skips provably dominated
    // candidates, so both pick the same items.
    let k = symmetric_kernel(150, 5);
    let s = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        15,
        Optimizer::Stochastic { epsilon: 0.2 },
        Mode::Dense,
        1,
    );
    let l = run(
        SetFunction::FacilityLocation,
        &k,
        None,
        15,
        Optimizer::LazierThanLazy { epsilon: 0.2 },
        Mode::Dense,
        1,
    );
    assert_eq!(s.selection.indices, l.selection.indices);
    assert!(l.selection.evaluations <= s.selection.evaluations);
}

#[test]
fn knn_from_cosine_keeps_the_top_k_per_column() {
    let mut g = Lcg(9);
    let e = Array2::from_shape_fn((50, 8), |_| g.next() - 0.5);
    let src = CosineSource::new(e.view(), None, CosineTransform::Clip).unwrap();
    let knn = select::SparseKernel::knn_from_source(&src, 5).unwrap();
    let rows: Vec<usize> = (0..50).collect();
    let mut full = vec![0f32; 2500];
    nncift_core::PairwiseSource::block(&src, &rows, &rows, &mut full).unwrap();
    for t in 0..50 {
        let mut col: Vec<(f32, usize)> = (0..50).map(|j| (full[j * 50 + t], j)).collect();
        col.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut want: Vec<usize> = col[..5].iter().map(|x| x.1).collect();
        want.sort_unstable();
        let got: Vec<usize> = knn.col(t).0.iter().map(|&j| j as usize).collect();
        assert_eq!(got, want, "column {t}");
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut k = symmetric_kernel(10, 1);
    k[[2, 3]] = -0.5;
    let req = |k: &Array2<f32>, f: SetFunction| {
        select::run(
            &Request {
                function: f,
                kernel: Some(KernelSpec::Dense(k.view())),
                query: None,
                private: None,
                quality: None,
                mode: Mode::Dense,
                greedi: None,
                run: RunConfig {
                    count: 3,
                    ..Default::default()
                },
            },
            1,
        )
    };
    let e = req(&k, SetFunction::FacilityLocation).unwrap_err();
    assert!(e.to_string().contains("non-negative"), "{e}");
    let rect = random_kernel(10, 4, 2);
    let e = req(&rect, SetFunction::GraphCut { lambda: 0.5 }).unwrap_err();
    assert!(e.to_string().contains("square"), "{e}");
    let e = req(&symmetric_kernel(10, 1), SetFunction::Flmi { eta: 1.0 }).unwrap_err();
    assert!(e.to_string().contains("query"), "{e}");
}

#[test]
fn symmetric_knn_build_equals_the_generic_one_for_any_thread_count() {
    // 2,300 items: three 1,024-row tiles, the last one ragged; every 7th row
    // duplicates an earlier one so that exact ties exercise the index order.
    let mut g = Lcg(21);
    let mut e = Array2::from_shape_fn((2300, 12), |_| g.next() - 0.5);
    for i in (7..2300).step_by(7) {
        let src = e.row(i / 3).to_owned();
        e.row_mut(i).assign(&src);
    }
    let src = CosineSource::new(e.view(), None, CosineTransform::Clip).unwrap();
    let generic = nncift_core::thread_pool(2)
        .unwrap()
        .install(|| select::SparseKernel::knn_from_source(&src, 6))
        .unwrap();
    for threads in [1, 2, 3] {
        let fast = nncift_core::thread_pool(threads)
            .unwrap()
            .install(|| select::SparseKernel::knn_cosine_self(&src, 6))
            .unwrap();
        assert_eq!(fast.nnz(), generic.nnz());
        for t in 0..2300 {
            let (gi, gv) = generic.col(t);
            let (fi, fv) = fast.col(t);
            assert_eq!(fi, gi, "column {t}, {threads} threads");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(fv), bits(gv), "column {t}, {threads} threads");
        }
    }
    let rect = CosineSource::new(e.view(), Some(e.view()), CosineTransform::Clip).unwrap();
    assert!(select::SparseKernel::knn_cosine_self(&rect, 3).is_err());
}

#[test]
fn symmetric_dense_build_equals_block_by_block() {
    let mut g = Lcg(33);
    let e = Array2::from_shape_fn((1300, 9), |_| g.next() - 0.5);
    let src = CosineSource::new(e.view(), None, CosineTransform::Shift).unwrap();
    let rows: Vec<usize> = (0..1300).collect();
    let mut want = vec![0f32; 1300 * 1300];
    nncift_core::PairwiseSource::block(&src, &rows, &rows, &mut want).unwrap();
    for threads in [1, 2] {
        let got = nncift_core::thread_pool(threads)
            .unwrap()
            .install(|| src.dense_self())
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(got.as_slice().unwrap()),
            bits(&want),
            "{threads} threads"
        );
    }
}
