//! The names and defaults of a selection request: objective, optimizer, mode and
//! cosine-transform names as the Python API spells them, the kernel a request's
//! arrays describe, and the checks on integer arguments. The binding only converts
//! arrays and calls these, so every rule about a request lives in this crate.

use ndarray::ArrayView2;

use super::functions::SetFunction;
use super::kernels::{CosineTransform, SharedSource};
use super::optimizers::Optimizer;
use super::{KernelSpec, Mode};
use crate::error::{CoreError, CoreResult};

/// The parameters of the set functions that take one (the Python defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FunctionParams {
    /// FLMI query-relevance magnification.
    pub eta: f32,
    /// FLCG privacy hardness.
    pub nu: f32,
    /// Graph-cut diversity weight.
    pub lambda: f32,
}

impl Default for FunctionParams {
    fn default() -> Self {
        Self {
            eta: 1.0,
            nu: 1.0,
            lambda: 0.5,
        }
    }
}

impl SetFunction {
    /// The function named `name` ("fl", "flmi", "flcg", "graph-cut", "disparity-sum",
    /// "disparity-min", "topk"), taking its parameter from `params`.
    pub fn from_name(name: &str, params: FunctionParams) -> CoreResult<Self> {
        Ok(match name {
            "fl" => SetFunction::FacilityLocation,
            "flmi" => SetFunction::Flmi { eta: params.eta },
            "flcg" => SetFunction::Flcg { nu: params.nu },
            "graph-cut" => SetFunction::GraphCut {
                lambda: params.lambda,
            },
            "disparity-sum" => SetFunction::DisparitySum,
            "disparity-min" => SetFunction::DisparityMin,
            "topk" => SetFunction::Modular,
            other => return Err(CoreError::Value(format!("unknown objective {other:?}"))),
        })
    }
}

impl Optimizer {
    /// The optimizer named `name` ("naive", "lazy", "stochastic", "lazier-than-lazy");
    /// `epsilon` is the sample parameter of the stochastic two.
    pub fn from_name(name: &str, epsilon: f64) -> CoreResult<Self> {
        Ok(match name {
            "naive" => Optimizer::Naive,
            "lazy" => Optimizer::Lazy,
            "stochastic" => Optimizer::Stochastic { epsilon },
            "lazier-than-lazy" => Optimizer::LazierThanLazy { epsilon },
            other => return Err(CoreError::Value(format!("unknown optimizer {other:?}"))),
        })
    }
}

impl Mode {
    /// The mode named `name` ("dense", "sparse", "onthefly"); `knn` is the number of
    /// neighbours of the sparse mode.
    pub fn from_name(name: &str, knn: usize) -> CoreResult<Self> {
        Ok(match name {
            "dense" => Mode::Dense,
            "sparse" => Mode::Sparse { k: knn },
            "onthefly" => Mode::OnTheFly,
            other => return Err(CoreError::Value(format!("unknown mode {other:?}"))),
        })
    }
}

impl CosineTransform {
    /// The transform named `name` ("clip", "shift", "raw").
    pub fn from_name(name: &str) -> CoreResult<Self> {
        Ok(match name {
            "clip" => CosineTransform::Clip,
            "shift" => CosineTransform::Shift,
            "raw" => CosineTransform::Raw,
            other => {
                return Err(CoreError::Value(format!(
                    "unknown cosine transform {other:?}"
                )))
            }
        })
    }
}

impl<'a> KernelSpec<'a> {
    /// The main kernel of a request: a dense `kernel` wins, then an on-the-fly
    /// `source`, then the cosine of `embeddings` against `represented` (or themselves).
    pub fn main(
        kernel: Option<ArrayView2<'a, f32>>,
        embeddings: Option<ArrayView2<'a, f32>>,
        represented: Option<ArrayView2<'a, f32>>,
        source: Option<SharedSource>,
        transform: CosineTransform,
    ) -> Option<Self> {
        match (kernel, embeddings, source) {
            (Some(k), _, _) => Some(KernelSpec::Dense(k)),
            (None, _, Some(s)) => Some(KernelSpec::Source(s)),
            (None, Some(e), None) => Some(KernelSpec::Embeddings {
                rows: e,
                cols: represented,
                transform,
            }),
            (None, None, None) => None,
        }
    }

    /// A side kernel (`what` = "query" or "private"): a dense `kernel`, or the cosine of
    /// the `pool` embeddings against `embeddings`, which needs the pool's embeddings.
    pub fn side(
        kernel: Option<ArrayView2<'a, f32>>,
        embeddings: Option<ArrayView2<'a, f32>>,
        pool: Option<ArrayView2<'a, f32>>,
        transform: CosineTransform,
        what: &str,
    ) -> CoreResult<Option<Self>> {
        match (kernel, embeddings) {
            (Some(k), _) => Ok(Some(KernelSpec::Dense(k))),
            (None, Some(e)) => {
                let rows = pool.ok_or_else(|| {
                    CoreError::Value(format!(
                        "{what}_embeddings need the pool's embeddings as well"
                    ))
                })?;
                Ok(Some(KernelSpec::Embeddings {
                    rows,
                    cols: Some(e),
                    transform,
                }))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `values` as indices, or a `Value` error from `negative(v)` for the first negative one.
pub fn non_negative<T: TryFrom<i64>>(
    values: impl IntoIterator<Item = i64>,
    negative: impl Fn(i64) -> String,
) -> CoreResult<Vec<T>> {
    values
        .into_iter()
        .map(|v| T::try_from(v).map_err(|_| CoreError::Value(negative(v))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_value_errors() {
        let p = FunctionParams::default();
        assert_eq!(
            SetFunction::from_name("graph-cut", p).expect("accepted"),
            SetFunction::GraphCut { lambda: 0.5 }
        );
        assert_eq!(
            Optimizer::from_name("stochastic", 0.1).expect("accepted"),
            Optimizer::Stochastic { epsilon: 0.1 }
        );
        assert_eq!(
            Mode::from_name("sparse", 7).expect("accepted"),
            Mode::Sparse { k: 7 }
        );
        assert_eq!(
            CosineTransform::from_name("shift").expect("accepted"),
            CosineTransform::Shift
        );
        for err in [
            SetFunction::from_name("magic", p).expect_err("refused"),
            Optimizer::from_name("magic", 0.1).expect_err("refused"),
            Mode::from_name("magic", 1).expect_err("refused"),
            CosineTransform::from_name("magic").expect_err("refused"),
        ] {
            assert!(matches!(err, CoreError::Value(m) if m.starts_with("unknown")));
        }
    }

    #[test]
    fn side_embeddings_need_the_pool() {
        let e = ndarray::Array2::<f32>::ones((2, 3));
        let Err(err) = KernelSpec::side(None, Some(e.view()), None, CosineTransform::Clip, "query")
        else {
            panic!("query embeddings without the pool were accepted");
        };
        assert!(err.to_string().contains("query_embeddings need"));
        assert!(
            KernelSpec::side(None, None, None, CosineTransform::Clip, "query")
                .expect("accepted")
                .is_none()
        );
    }

    #[test]
    fn negative_values_are_refused() {
        let ok: Vec<usize> = non_negative([0, 3], |v| format!("{v}")).expect("accepted");
        assert_eq!(ok, vec![0, 3]);
        let err =
            non_negative::<u64>([1, -2], |v| format!("rank {v} is negative")).expect_err("refused");
        assert_eq!(err, CoreError::Value("rank -2 is negative".into()));
    }
}
