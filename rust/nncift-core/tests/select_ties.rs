//! Ties and early stops: equal gains break by a seeded permutation (never the
//! pool's order), identically for every optimizer, thread count and GreeDi;
//! top-k never stops on a score of 0 or below; a short result says why.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use ndarray::Array2;
use nncift_core::select::{
    self, Greedi, KernelSpec, Mode, Optimizer, Request, RunConfig, SetFunction, Stop,
};

fn request(
    f: SetFunction,
    k: Option<&Array2<f32>>,
    quality: Option<Vec<f32>>,
    run: RunConfig,
    greedi: Option<Greedi>,
) -> Request<'_> {
    Request {
        function: f,
        kernel: k.map(|k| KernelSpec::Dense(k.view())),
        query: None,
        private: None,
        quality: quality.map(|q| (q, 1.0)),
        mode: Mode::Dense,
        greedi,
        run,
    }
}

fn cfg(opt: Optimizer, count: usize, seed: u64) -> RunConfig {
    RunConfig {
        optimizer: opt,
        count,
        seed,
        ..Default::default()
    }
}

const OPTIMIZERS: [Optimizer; 4] = [
    Optimizer::Naive,
    Optimizer::Lazy,
    Optimizer::Stochastic { epsilon: 0.1 },
    Optimizer::LazierThanLazy { epsilon: 0.1 },
];

#[test]
fn tie_ranks_are_a_seeded_permutation() {
    let a = select::tie_ranks(1000, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
    assert_ne!(a, (0..1000).collect::<Vec<u64>>());
    assert_eq!(a, select::tie_ranks(1000, 0));
    assert_ne!(a, select::tie_ranks(1000, 1));
    assert!(select::tie_ranks(0, 3).is_empty());
}

#[test]
fn a_constant_kernel_gives_a_seeded_sample_not_the_head_of_the_pool() {
    let n = 60;
    let k = Array2::<f32>::ones((n, n));
    let head: Vec<usize> = (0..10).collect();
    for f in [
        SetFunction::FacilityLocation,
        SetFunction::GraphCut { lambda: 0.0 },
        SetFunction::DisparityMin,
    ] {
        let mut per_seed = Vec::new();
        for seed in [0u64, 1, 2] {
            // Every pick after the first ties at gain 0 (graph cut with lambda 0:
            // every gain ties at n); the seeded order decides all of them.
            let rank = select::tie_ranks(n, seed);
            let mut by_rank: Vec<usize> = (0..n).collect();
            by_rank.sort_by_key(|&j| rank[j]);
            let want = &by_rank[..10];
            let mut first: Option<Vec<usize>> = None;
            for opt in [Optimizer::Naive, Optimizer::Lazy] {
                for threads in [1, 2, 4] {
                    let req = request(f.clone(), Some(&k), None, cfg(opt, 10, seed), None);
                    let got = select::run(&req, threads).unwrap().selection;
                    assert_eq!(got.indices, want, "{f:?} {opt:?} seed {seed} {threads} thr");
                    assert_eq!(got.stop, None);
                    match &first {
                        None => first = Some(got.indices.clone()),
                        Some(a) => assert_eq!(a, &got.indices, "{f:?} {opt:?} {threads}"),
                    }
                }
            }
            assert_ne!(want, head.as_slice(), "{f:?} seed {seed}");
            per_seed.push(want.to_vec());
        }
        assert_ne!(per_seed[0], per_seed[1], "{f:?}");
        assert_ne!(per_seed[1], per_seed[2], "{f:?}");
    }
}

#[test]
fn stochastic_ties_are_seeded_and_thread_independent() {
    let n = 300;
    let k = Array2::<f32>::ones((n, n));
    for opt in [
        Optimizer::Stochastic { epsilon: 0.1 },
        Optimizer::LazierThanLazy { epsilon: 0.1 },
    ] {
        let runs: Vec<Vec<usize>> = [1, 2, 4]
            .iter()
            .map(|&t| {
                let req = request(
                    SetFunction::FacilityLocation,
                    Some(&k),
                    None,
                    cfg(opt, 12, 5),
                    None,
                );
                select::run(&req, t).unwrap().selection.indices
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{opt:?}");
        assert_eq!(runs[0], runs[2], "{opt:?}");
        // Each pick is the lowest-ranked item of its sample: its rank is at most
        // that of every other item sampled, so never the highest rank left.
        let rank = select::tie_ranks(n, 5);
        assert!(runs[0].iter().all(|&j| rank[j] < n as u64 - 1), "{opt:?}");
        assert_ne!(runs[0], (0..12).collect::<Vec<usize>>());
    }
    // Stochastic and lazier-than-lazy see the same samples: same picks, ties too.
    let pick = |opt| {
        let req = request(
            SetFunction::FacilityLocation,
            Some(&k),
            None,
            cfg(opt, 12, 9),
            None,
        );
        select::run(&req, 2).unwrap().selection.indices
    };
    assert_eq!(
        pick(Optimizer::Stochastic { epsilon: 0.2 }),
        pick(Optimizer::LazierThanLazy { epsilon: 0.2 })
    );
}

#[test]
fn greedi_ties_use_global_ranks_and_do_not_depend_on_threads() {
    let n = 90;
    let k = Array2::<f32>::ones((n, n));
    let g = Some(Greedi {
        parts: 3,
        local_factor: 2.0,
    });
    let run = |seed: u64, threads: usize| {
        let req = request(
            SetFunction::FacilityLocation,
            Some(&k),
            None,
            cfg(Optimizer::Lazy, 9, seed),
            g,
        );
        select::run(&req, threads).unwrap().selection
    };
    let a = run(0, 1);
    assert_eq!(a.indices.len(), 9);
    assert_eq!(a.indices, run(0, 2).indices);
    assert_eq!(a.indices, run(0, 4).indices);
    assert_ne!(a.indices, run(1, 1).indices);
    assert_ne!(a.indices, (0..9).collect::<Vec<usize>>());
    // The merge sees a constant kernel too: it takes the union's items in global
    // rank order, so the picks come out in increasing global rank.
    let rank = select::tie_ranks(n, 0);
    assert!(a.indices.windows(2).all(|w| rank[w[0]] < rank[w[1]]));
}

#[test]
fn topk_never_stops_on_zero_or_negative_scores() {
    let scores = vec![0.3, 0.0, -0.1, 0.0, -0.5, 0.2, 0.0, -0.1];
    for opt in OPTIMIZERS {
        let mut c = cfg(opt, 8, 0);
        c.stop_if_zero_gain = true;
        c.stop_if_negative_gain = true;
        let req = request(SetFunction::Modular, None, Some(scores.clone()), c, None);
        let got = select::run(&req, 1).unwrap().selection;
        assert_eq!(got.indices.len(), 8, "{opt:?}: {:?}", got.indices);
        assert_eq!(got.stop, None);
        if matches!(opt, Optimizer::Naive | Optimizer::Lazy) {
            let s: Vec<f32> = got.indices.iter().map(|&j| scores[j]).collect();
            assert_eq!(s, vec![0.3, 0.2, 0.0, 0.0, 0.0, -0.1, -0.1, -0.5]);
        }
    }
}

#[test]
fn equal_scores_in_topk_follow_the_seeded_order() {
    let scores = vec![1.0f32; 40];
    let pick = |seed: u64, opt: Optimizer, threads: usize| {
        let req = request(
            SetFunction::Modular,
            None,
            Some(scores.clone()),
            cfg(opt, 5, seed),
            None,
        );
        select::run(&req, threads).unwrap().selection.indices
    };
    let a = pick(0, Optimizer::Lazy, 1);
    assert_ne!(a, (0..5).collect::<Vec<usize>>());
    assert_eq!(a, pick(0, Optimizer::Naive, 2));
    assert_eq!(a, pick(0, Optimizer::Lazy, 4));
    assert_ne!(a, pick(7, Optimizer::Lazy, 1));
}

#[test]
fn short_results_say_why() {
    let n = 20;
    let ones = Array2::<f32>::ones((n, n));
    // Zero gain: after one pick a constant kernel is saturated.
    let mut c = cfg(Optimizer::Lazy, 5, 0);
    c.stop_if_zero_gain = true;
    let req = request(SetFunction::FacilityLocation, Some(&ones), None, c, None);
    let got = select::run(&req, 1).unwrap().selection;
    assert_eq!((got.indices.len(), got.stop), (1, Some(Stop::ZeroGain)));
    // Negative gain: graph cut with a heavy redundancy weight.
    let mut c = cfg(Optimizer::Naive, 5, 0);
    c.stop_if_negative_gain = true;
    let req = request(
        SetFunction::GraphCut { lambda: 5.0 },
        Some(&ones),
        None,
        c,
        None,
    );
    let got = select::run(&req, 1).unwrap().selection;
    assert!(got.indices.len() < 5);
    assert_eq!(got.stop, Some(Stop::NegativeGain));
    // Cost budget: three unit-cost items fit, five are asked for.
    for opt in OPTIMIZERS {
        let mut c = cfg(opt, 5, 0);
        c.costs = Some(vec![1.0; n]);
        c.cost_budget = Some(3.0);
        let req = request(SetFunction::FacilityLocation, Some(&ones), None, c, None);
        let got = select::run(&req, 1).unwrap().selection;
        assert_eq!(
            (got.indices.len(), got.stop),
            (3, Some(Stop::CostBudget)),
            "{opt:?}"
        );
    }
    // Exhausted: more asked for than the pool holds.
    let req = request(
        SetFunction::FacilityLocation,
        Some(&ones),
        None,
        cfg(Optimizer::Lazy, n + 3, 0),
        None,
    );
    let got = select::run(&req, 1).unwrap().selection;
    assert_eq!((got.indices.len(), got.stop), (n, Some(Stop::Exhausted)));
    // GreeDi: a part's zero-gain stop leaves the union short of the budget.
    let mut c = cfg(Optimizer::Lazy, 6, 0);
    c.stop_if_zero_gain = true;
    let g = Some(Greedi {
        parts: 2,
        local_factor: 2.0,
    });
    let req = request(SetFunction::FacilityLocation, Some(&ones), None, c, g);
    let got = select::run(&req, 1).unwrap().selection;
    assert!(got.indices.len() < 6);
    assert_eq!(got.stop, Some(Stop::ZeroGain));
    // A full result has no stop reason.
    let req = request(
        SetFunction::FacilityLocation,
        Some(&ones),
        None,
        cfg(Optimizer::Lazy, 5, 0),
        None,
    );
    assert_eq!(select::run(&req, 1).unwrap().selection.stop, None);
}

#[test]
fn tie_ranks_of_the_wrong_length_are_an_error() {
    let k = Array2::<f32>::ones((10, 10));
    let mut c = cfg(Optimizer::Lazy, 3, 0);
    c.tie_ranks = Some(vec![0, 1, 2]);
    let req = request(SetFunction::FacilityLocation, Some(&k), None, c, None);
    let e = select::run(&req, 1).unwrap_err();
    assert!(e.to_string().contains("tie ranks"), "{e}");
}

#[test]
fn knn_kernels_keep_equal_neighbours_by_tie_rank() {
    use nncift_core::select::{CosineSource, CosineTransform, SparseKernel};
    let n = 50;
    let e = Array2::<f32>::ones((n, 4)); // every cosine is exactly 1
    let src = CosineSource::new(e.view(), None, CosineTransform::Clip).unwrap();
    let rank = select::tie_ranks(n, 3);
    let mut want: Vec<usize> = (0..n).collect();
    want.sort_by_key(|&j| rank[j]);
    let mut want = want[..3].to_vec();
    want.sort_unstable();
    let generic = nncift_core::thread_pool(2)
        .unwrap()
        .install(|| SparseKernel::knn_from_source_ranked(&src, 3, &rank))
        .unwrap();
    for threads in [1, 2, 3] {
        let fast = nncift_core::thread_pool(threads)
            .unwrap()
            .install(|| SparseKernel::knn_cosine_self_ranked(&src, 3, &rank))
            .unwrap();
        for t in 0..n {
            let got: Vec<usize> = fast.col(t).0.iter().map(|&j| j as usize).collect();
            assert_eq!(got, want, "column {t}, {threads} threads");
            assert_eq!(fast.col(t).0, generic.col(t).0, "column {t}");
        }
    }
    // The whole sparse selection: the seeded order, not the head of the file.
    for threads in [1, 2] {
        let req = Request {
            function: SetFunction::FacilityLocation,
            kernel: Some(KernelSpec::Embeddings {
                rows: e.view(),
                cols: None,
                transform: CosineTransform::Clip,
            }),
            query: None,
            private: None,
            quality: None,
            mode: Mode::Sparse { k: 3 },
            greedi: None,
            run: cfg(Optimizer::Lazy, 6, 3),
        };
        let got = select::run(&req, threads).unwrap().selection.indices;
        let mut by_rank: Vec<usize> = (0..n).collect();
        by_rank.sort_by_key(|&j| rank[j]);
        assert_eq!(got, by_rank[..6], "{threads} threads");
    }
}
