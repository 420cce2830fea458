//! Property tests of selection on random non-negative kernels, for every objective,
//! optimizer and kernel mode the core exposes (and GreeDi): no duplicate index, the budget
//! (count or cost) and the initial set respected, the reported objective equal to a
//! reference evaluation of `f(initial ∪ chosen)` written here, chosen gains non-increasing
//! for naive and lazy greedy on the functions whose gains never grow, lazy == naive and
//! lazier-than-lazy == stochastic per seed, identical results for 1, 2 and 4 threads, and
//! greedy within (1 - 1/e) of the brute-force optimum on pools of <= 10 items for the
//! monotone submodular FL, FLMI and FLCG.

use std::sync::Arc;

use ndarray::Array2;
use nncift_core::select::{
    self, Greedi, KernelSpec, Mode, Optimizer, Outcome, OwnedDense, Request, RunConfig, SetFunction,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7365_6c65_6374),
        ..Config::default()
    }
}

// ---------------------------------------------------------------- generated cases

#[derive(Debug, Clone)]
struct Case {
    function: SetFunction,
    /// `(n, m)`; square and symmetric for every function but FL.
    kernel: Array2<f32>,
    /// FLMI query / FLCG private kernel `(n, q)`.
    side: Option<Array2<f32>>,
    quality: Option<(Vec<f32>, f64)>,
    costs: Option<(Vec<f64>, f64)>,
    initial: Vec<usize>,
    count: usize,
    seed: u64,
    mode: Mode,
}

/// Entries in [0, 1]; a quantised grid half the time, so that exact ties are common.
fn entries(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        proptest::collection::vec(0.0f32..=1.0, len),
        proptest::collection::vec((0u8..=4).prop_map(|q| f32::from(q) / 4.0), len),
    ]
}

fn function() -> impl Strategy<Value = SetFunction> {
    prop_oneof![
        Just(SetFunction::FacilityLocation),
        (0.0f32..2.0).prop_map(|eta| SetFunction::Flmi { eta }),
        (0.0f32..2.0).prop_map(|nu| SetFunction::Flcg { nu }),
        (0.0f32..1.0).prop_map(|lambda| SetFunction::GraphCut { lambda }),
        Just(SetFunction::DisparitySum),
        Just(SetFunction::DisparityMin),
        Just(SetFunction::Modular),
    ]
}

/// A case with a pool of `lo..=hi` items.
fn case(lo: usize, hi: usize) -> impl Strategy<Value = Case> {
    (function(), lo..=hi, 1usize..=hi, 1usize..4)
        .prop_flat_map(|(function, n, m_fl, q)| {
            let m = if function == SetFunction::FacilityLocation {
                m_fl
            } else {
                n
            };
            let side = matches!(
                function,
                SetFunction::Flmi { .. } | SetFunction::Flcg { .. }
            );
            let must_mix = function == SetFunction::Modular;
            (
                Just(function),
                Just((n, m)),
                entries(n * m),
                entries(n * q).prop_map(move |e| side.then_some(e)),
                Just(q),
                (
                    proptest::bool::weighted(0.3),
                    proptest::collection::vec(-1.0f32..1.0, n),
                    -1.0f64..1.0,
                )
                    .prop_map(move |(mix, s, w)| (mix || must_mix).then_some((s, w))),
                proptest::option::weighted(
                    0.2,
                    (proptest::collection::vec(0.1f64..2.0, n), 0.1f64..6.0),
                ),
                proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n.min(3)),
                0usize..=n + 1,
                any::<u64>(),
                0usize..3,
            )
        })
        .prop_map(
            |(function, (n, m), k, side, q, quality, costs, mut initial, count, seed, mode)| {
                let a = Array2::from_shape_vec((n, m), k).expect("shape");
                // Square kernels are symmetric with a unit diagonal (a similarity).
                let kernel = if function == SetFunction::FacilityLocation {
                    a
                } else {
                    Array2::from_shape_fn((n, n), |(i, j)| {
                        if i == j {
                            1.0
                        } else {
                            a[[i.min(j), i.max(j)]]
                        }
                    })
                };
                let side = side.map(|s| Array2::from_shape_vec((n, q), s).expect("shape"));
                // Shuffle the initial set's order by the seed (it is a set, not a prefix).
                let shift = seed as usize % initial.len().max(1);
                initial.rotate_left(shift);
                let mode = match mode {
                    0 => Mode::Dense,
                    1 => Mode::OnTheFly,
                    _ => Mode::Sparse { k: kernel.ncols() },
                };
                Case {
                    function,
                    kernel,
                    side,
                    quality,
                    costs,
                    initial,
                    count,
                    seed,
                    mode,
                }
            },
        )
}

fn optimizers() -> [Optimizer; 4] {
    [
        Optimizer::Naive,
        Optimizer::Lazy,
        Optimizer::Stochastic { epsilon: 0.2 },
        Optimizer::LazierThanLazy { epsilon: 0.2 },
    ]
}

fn run(c: &Case, opt: Optimizer, greedi: Option<Greedi>, n_jobs: usize) -> Outcome {
    let side = c.side.as_ref().map(|s| KernelSpec::Dense(s.view()));
    let (query, private) = match c.function {
        SetFunction::Flmi { .. } => (side, None),
        SetFunction::Flcg { .. } => (None, side),
        _ => (None, None),
    };
    let kernel = match (&c.function, c.mode) {
        (SetFunction::Modular, _) => None,
        (_, Mode::Dense) => Some(KernelSpec::Dense(c.kernel.view())),
        _ => Some(KernelSpec::Source(Arc::new(OwnedDense(c.kernel.clone())))),
    };
    let req = Request {
        function: c.function.clone(),
        kernel,
        query,
        private,
        quality: c.quality.clone(),
        mode: c.mode,
        greedi,
        run: RunConfig {
            optimizer: opt,
            count: c.count,
            costs: c.costs.as_ref().map(|(v, _)| v.clone()),
            cost_budget: c.costs.as_ref().map(|(_, b)| *b),
            initial: c.initial.clone(),
            seed: c.seed,
            ..Default::default()
        },
    };
    match select::run(&req, n_jobs) {
        Ok(o) => o,
        Err(e) => panic!("selection failed on a valid request: {e} ({opt:?}, {greedi:?})"),
    }
}

// ---------------------------------------------------------------- the reference

/// `f(set)` by definition (docs/method.md), in f64 over the f32 entries.
fn reference(c: &Case, set: &[usize]) -> f64 {
    let k = &c.kernel;
    let m = k.ncols();
    let best = |t: usize| {
        set.iter()
            .map(|&j| f64::from(k[[j, t]]))
            .fold(0.0, f64::max)
    };
    let side_max = |t: usize, scale: f32| {
        let s = c.side.as_ref().expect("side kernel");
        s.row(t)
            .iter()
            .map(|&v| f64::from(v * scale))
            .fold(0.0, f64::max)
    };
    let f = match &c.function {
        SetFunction::FacilityLocation => (0..m).map(best).sum(),
        SetFunction::Flmi { eta } => (0..m)
            .map(|t| best(t).min(side_max(t, *eta).max(f64::from(f32::MIN_POSITIVE))))
            .sum(),
        SetFunction::Flcg { nu } => (0..m)
            .map(|t| {
                let floor = side_max(t, *nu);
                best(t).max(floor) - floor
            })
            .sum(),
        SetFunction::GraphCut { lambda } => {
            let cover: f64 = set
                .iter()
                .map(|&j| k.row(j).iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum();
            let inner: f64 = set
                .iter()
                .flat_map(|&i| set.iter().map(move |&j| f64::from(k[[i, j]])))
                .sum();
            cover - f64::from(*lambda) * inner
        }
        SetFunction::DisparitySum => {
            let mut s = 0.0;
            for (a, &i) in set.iter().enumerate() {
                for &j in &set[a + 1..] {
                    s += f64::from(1.0 - k[[i, j]]);
                }
            }
            s
        }
        SetFunction::DisparityMin => {
            let mut d = f64::INFINITY;
            for (a, &i) in set.iter().enumerate() {
                for &j in &set[a + 1..] {
                    d = d.min(f64::from(1.0 - k[[i, j]]));
                }
            }
            if set.len() < 2 {
                0.0
            } else {
                d
            }
        }
        SetFunction::Modular => 0.0,
    };
    let q = c.quality.as_ref().map_or(0.0, |(s, w)| {
        set.iter().map(|&j| w * f64::from(s[j])).sum::<f64>()
    });
    f + q
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The invariants of one outcome of case `c`.
fn check_outcome(c: &Case, o: &Outcome, what: &str) -> Result<(), TestCaseError> {
    let s = &o.selection;
    let n = c.kernel.nrows();
    let mut seen = vec![false; n];
    for &j in &c.initial {
        seen[j] = true;
    }
    for &j in &s.indices {
        prop_assert!(j < n, "{what}: index {j} out of range");
        prop_assert!(!seen[j], "{what}: index {j} twice or from the initial set");
        seen[j] = true;
    }
    prop_assert!(s.indices.len() <= c.count, "{what}: over the count");
    prop_assert_eq!(s.gains.len(), s.indices.len());
    if s.indices.len() < c.count {
        prop_assert!(s.stop.is_some(), "{what}: short without a reason");
    }
    match &c.costs {
        Some((cost, budget)) => {
            let spent: f64 = s.indices.iter().map(|&j| cost[j]).sum();
            prop_assert!(spent <= budget + 1e-9, "{what}: cost {spent} > {budget}");
        }
        // No stop rule is on: only the pool's size can cut the run short.
        None => prop_assert_eq!(
            s.indices.len(),
            c.count.min(n - c.initial.len()),
            "{}: not the full budget",
            what
        ),
    }
    let mut set = c.initial.clone();
    set.extend(&s.indices);
    let want = reference(c, &set);
    prop_assert!(
        close(s.objective, want),
        "{what}: objective {} != f(initial ∪ chosen) = {want}",
        s.objective
    );
    Ok(())
}

// ---------------------------------------------------------------- the properties

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn every_objective_and_optimizer_keeps_its_invariants(c in case(1, 24)) {
        let mut per_opt = Vec::new();
        for opt in optimizers() {
            let o = run(&c, opt, None, 1);
            check_outcome(&c, &o, &format!("{opt:?}"))?;
            // The same bits for any thread count (evaluation counts may differ: the batch
            // size follows the threads).
            for n_jobs in [2, 4] {
                let p = run(&c, opt, None, n_jobs);
                prop_assert_eq!(&o.selection.indices, &p.selection.indices, "{:?} x{}", opt, n_jobs);
                prop_assert_eq!(bits(&o.selection.gains), bits(&p.selection.gains));
                prop_assert_eq!(o.selection.objective.to_bits(), p.selection.objective.to_bits());
                prop_assert_eq!(o.selection.stop, p.selection.stop);
            }
            per_opt.push(o.selection);
        }
        let grows = c.function == SetFunction::DisparitySum;
        if !grows {
            // Naive and lazy take the exact best key at each step, and keys never grow:
            // the chosen keys (gain, or gain / cost) never increase, and lazy == naive.
            for s in &per_opt[..2] {
                let keys: Vec<f64> = s.indices.iter().zip(&s.gains)
                    .map(|(&j, &g)| c.costs.as_ref().map_or(g, |(cost, _)| g / cost[j]))
                    .collect();
                for w in keys.windows(2) {
                    prop_assert!(w[1] <= w[0] + 1e-12 * (1.0 + w[0].abs()), "keys grow: {keys:?}");
                }
            }
            prop_assert_eq!(&per_opt[0].indices, &per_opt[1].indices, "lazy != naive");
        }
        // Same sample stream; lazier-than-lazy only skips dominated candidates.
        prop_assert_eq!(&per_opt[2].indices, &per_opt[3].indices, "lazier-than-lazy != stochastic");
    }

    #[test]
    fn greedi_keeps_its_invariants(c in case(4, 30), parts in 1usize..4, factor in 1.0f64..3.0) {
        // Partition-and-merge takes neither FLMI / FLCG, top-k without a kernel, a
        // non-square kernel, costs nor an initial set (each a clear error).
        prop_assume!(!matches!(
            c.function,
            SetFunction::Flmi { .. } | SetFunction::Flcg { .. } | SetFunction::Modular
        ));
        prop_assume!(c.kernel.is_square());
        let c = Case { initial: Vec::new(), costs: None, ..c };
        let g = Some(Greedi { parts, local_factor: factor });
        for opt in [Optimizer::Lazy, Optimizer::Stochastic { epsilon: 0.2 }] {
            let o = run(&c, opt, g, 1);
            let s = &o.selection;
            let n = c.kernel.nrows();
            let mut seen = vec![false; n];
            for &j in c.initial.iter().chain(&s.indices) {
                prop_assert!(j < n && !seen[j], "greedi: duplicate or out of range {j}");
                seen[j] = true;
            }
            prop_assert!(s.indices.len() <= c.count);
            let mut set = c.initial.clone();
            set.extend(&s.indices);
            let want = reference(&c, &set);
            if matches!(c.function, SetFunction::FacilityLocation | SetFunction::GraphCut { .. }) {
                // The merge reports f over the union of the parts' picks as its ground set
                // (greedi.rs: "objective on the union"): FL covers, and graph cut sums rows
                // over, the union's columns only, so never more than f over the pool.
                prop_assert!(s.objective <= want + 1e-5 * (1.0 + want.abs()),
                    "greedi objective {} > f over the pool {want}", s.objective);
            } else {
                prop_assert!(close(s.objective, want), "greedi objective {} != {want}", s.objective);
            }
            for n_jobs in [2, 4] {
                let p = run(&c, opt, g, n_jobs);
                prop_assert_eq!(&s.indices, &p.selection.indices);
                prop_assert_eq!(s.objective.to_bits(), p.selection.objective.to_bits());
            }
        }
    }

    #[test]
    fn greedy_is_within_1_minus_1_over_e_of_brute_force(c in case(1, 10), k in 1usize..=4) {
        prop_assume!(matches!(
            c.function,
            SetFunction::FacilityLocation | SetFunction::Flmi { .. } | SetFunction::Flcg { .. }
        ));
        // Monotone submodular and normalised: no initial set, no costs, no (possibly
        // negative) modular term.
        let c = Case { initial: Vec::new(), costs: None, quality: None, count: k, ..c };
        let n = c.kernel.nrows();
        let k = k.min(n);
        let mut opt = 0f64;
        let mut subset: Vec<usize> = (0..k).collect();
        loop {
            opt = opt.max(reference(&c, &subset));
            // Next k-combination of 0..n in lexicographic order.
            let Some(i) = (0..k).rev().find(|&i| subset[i] < n - k + i) else { break };
            subset[i] += 1;
            for j in i + 1..k {
                subset[j] = subset[j - 1] + 1;
            }
        }
        for o in [Optimizer::Naive, Optimizer::Lazy] {
            let got = run(&c, o, None, 1).selection.objective;
            let bound = (1.0 - (-1.0f64).exp()) * opt;
            prop_assert!(got >= bound - 1e-9, "{o:?}: {got} < (1 - 1/e) * {opt}");
        }
    }
}
