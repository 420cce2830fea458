//! Binding of `nncift_core::select`: `nncift._core.select_core(...)`.
//! Converts arguments, releases the GIL for the whole run, maps errors.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use nncift_core::select::{
    self, non_negative, CosineTransform, FunctionParams, Greedi, KernelSpec, Mode, Optimizer,
    Request, RunConfig, SetFunction, SharedSource,
};

use crate::scorer::PyScorerKernel;
use crate::to_py_err;

fn contiguous<'a>(
    a: &'a Option<PyReadonlyArray2<'_, f32>>,
    name: &str,
) -> PyResult<Option<ndarray::ArrayView2<'a, f32>>> {
    match a {
        None => Ok(None),
        Some(x) => {
            if !x.is_c_contiguous() {
                return Err(PyValueError::new_err(format!(
                    "{name} must be a C-contiguous float32 array"
                )));
            }
            Ok(Some(x.as_array()))
        }
    }
}

/// Turn a scorer-like Python object into a shared kernel source: a
/// `nncift._core.ScorerKernel` (from `Scorer.bind(rows, cols)`), whose entries
/// the InfluenceNetwork computes on request (no N x N matrix).
fn extract_source(obj: &Bound<'_, PyAny>) -> PyResult<SharedSource> {
    if let Ok(k) = obj.cast::<PyScorerKernel>() {
        return Ok(k.get().source());
    }
    Err(PyValueError::new_err(format!(
        "kernel_source must be an nncift ScorerKernel (from Scorer.bind(rows, cols)); got {}",
        obj.get_type().name()?
    )))
}

/// Run one selection; see `nncift.selection.select` for the documented API.
///
/// Returns (indices int64 (k,), gains float64 (k,), objective, timings
/// [(stage, seconds)], mode, optimizer, evaluations, stop), where `stop` is
/// None when `count` items were chosen, else why not (`zero_gain`,
/// `negative_gain`, `cost_budget`, `exhausted`). `stop_if_zero_gain`'s default
/// (False) must equal `nncift.selection.STOP_IF_ZERO_GAIN_DEFAULT`.
#[pyfunction]
#[pyo3(signature = (
    objective, count, *, kernel=None, embeddings=None, represented_embeddings=None,
    query_kernel=None, query_embeddings=None, private_kernel=None, private_embeddings=None,
    scores=None, quality_weight=1.0, mode="dense", knn=10, optimizer="lazy", epsilon=0.01,
    eta=1.0, nu=1.0, lambda_=0.5, costs=None, cost_budget=None, initial=None,
    stop_if_zero_gain=false, stop_if_negative_gain=false, seed=0, n_jobs=0, cosine="clip",
    greedi_parts=0, greedi_local_factor=2.0, kernel_source=None, tie_ranks=None
))]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::type_complexity)]
pub fn select_core<'py>(
    py: Python<'py>,
    objective: &str,
    count: usize,
    kernel: Option<PyReadonlyArray2<'py, f32>>,
    embeddings: Option<PyReadonlyArray2<'py, f32>>,
    represented_embeddings: Option<PyReadonlyArray2<'py, f32>>,
    query_kernel: Option<PyReadonlyArray2<'py, f32>>,
    query_embeddings: Option<PyReadonlyArray2<'py, f32>>,
    private_kernel: Option<PyReadonlyArray2<'py, f32>>,
    private_embeddings: Option<PyReadonlyArray2<'py, f32>>,
    scores: Option<PyReadonlyArray1<'py, f32>>,
    quality_weight: f64,
    mode: &str,
    knn: usize,
    optimizer: &str,
    epsilon: f64,
    eta: f32,
    nu: f32,
    lambda_: f32,
    costs: Option<PyReadonlyArray1<'py, f64>>,
    cost_budget: Option<f64>,
    initial: Option<PyReadonlyArray1<'py, i64>>,
    stop_if_zero_gain: bool,
    stop_if_negative_gain: bool,
    seed: u64,
    n_jobs: usize,
    cosine: &str,
    greedi_parts: usize,
    greedi_local_factor: f64,
    kernel_source: Option<Bound<'py, PyAny>>,
    tie_ranks: Option<PyReadonlyArray1<'py, i64>>,
) -> PyResult<(
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    f64,
    Vec<(String, f64)>,
    String,
    String,
    u64,
    Option<&'static str>,
)> {
    let params = FunctionParams {
        eta,
        nu,
        lambda: lambda_,
    };
    let function = SetFunction::from_name(objective, params).map_err(to_py_err)?;
    let optimizer = Optimizer::from_name(optimizer, epsilon).map_err(to_py_err)?;
    let mode = Mode::from_name(mode, knn).map_err(to_py_err)?;
    let transform = CosineTransform::from_name(cosine).map_err(to_py_err)?;
    let kernel_v = contiguous(&kernel, "kernel")?;
    let emb_v = contiguous(&embeddings, "embeddings")?;
    let rep_v = contiguous(&represented_embeddings, "represented_embeddings")?;
    let source = kernel_source.as_ref().map(extract_source).transpose()?;
    let main = KernelSpec::main(kernel_v, emb_v, rep_v, source, transform);
    let query = KernelSpec::side(
        contiguous(&query_kernel, "query_kernel")?,
        contiguous(&query_embeddings, "query_embeddings")?,
        emb_v,
        transform,
        "query",
    )
    .map_err(to_py_err)?;
    let private = KernelSpec::side(
        contiguous(&private_kernel, "private_kernel")?,
        contiguous(&private_embeddings, "private_embeddings")?,
        emb_v,
        transform,
        "private",
    )
    .map_err(to_py_err)?;
    let quality = scores
        .as_ref()
        .map(|s| (s.as_array().to_vec(), quality_weight));
    let costs_v = costs.as_ref().map(|c| c.as_array().to_vec());
    let initial_v: Vec<usize> = match &initial {
        None => Vec::new(),
        Some(ini) => non_negative(ini.as_array().iter().copied(), |i| {
            format!("initial index {i} is negative")
        })
        .map_err(to_py_err)?,
    };
    let ranks_v: Option<Vec<u64>> = tie_ranks
        .as_ref()
        .map(|r| {
            non_negative(r.as_array().iter().copied(), |x| {
                format!("tie rank {x} is negative")
            })
        })
        .transpose()
        .map_err(to_py_err)?;
    let greedi = (greedi_parts > 0).then_some(Greedi {
        parts: greedi_parts,
        local_factor: greedi_local_factor,
    });
    let req = Request {
        function,
        kernel: main,
        query,
        private,
        quality,
        mode,
        greedi,
        run: RunConfig {
            optimizer,
            count,
            costs: costs_v,
            cost_budget,
            stop_if_zero_gain,
            stop_if_negative_gain,
            initial: initial_v,
            seed,
            tie_ranks: ranks_v,
            ..RunConfig::default()
        },
    };
    let out = py.detach(|| select::run(&req, n_jobs)).map_err(to_py_err)?;
    let idx: Vec<i64> = out.selection.indices.iter().map(|&i| i as i64).collect();
    Ok((
        idx.into_pyarray(py),
        out.selection.gains.into_pyarray(py),
        out.selection.objective,
        out.timings,
        out.mode,
        out.optimizer,
        out.selection.evaluations,
        out.selection.stop.map(|s| s.name()),
    ))
}

/// The tie ranks a selection with `seed` uses for `n` items (int64 (n,), a
/// permutation of 0..n): of two equal gains the item with the lower rank is
/// chosen. A distributed driver hands each part the ranks of its items.
#[pyfunction]
pub fn tie_ranks<'py>(py: Python<'py>, n: usize, seed: u64) -> Bound<'py, PyArray1<i64>> {
    select::tie_ranks(n, seed)
        .into_iter()
        .map(|r| r as i64)
        .collect::<Vec<i64>>()
        .into_pyarray(py)
}

/// The parts partition-and-merge (`optimizer="greedi"`) cuts for `n` items, `parts`
/// parts and `seed`, each a sorted int64 array; and the per-part budget for `count`.
/// A distributed driver uses these to run the same parts as a local run.
#[pyfunction]
#[pyo3(signature = (n, parts, seed, count, local_factor=2.0))]
pub fn greedi_plan<'py>(
    py: Python<'py>,
    n: usize,
    parts: usize,
    seed: u64,
    count: usize,
    local_factor: f64,
) -> PyResult<(Vec<Bound<'py, PyArray1<i64>>>, usize)> {
    let (cut, local) =
        select::greedi_plan(n, parts, seed, count, local_factor).map_err(to_py_err)?;
    let arrays = cut
        .into_iter()
        .map(|p| {
            p.into_iter()
                .map(|i| i as i64)
                .collect::<Vec<i64>>()
                .into_pyarray(py)
        })
        .collect();
    Ok((arrays, local))
}

/// Register the selection functions on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(select_core, m)?)?;
    m.add_function(wrap_pyfunction!(greedi_plan, m)?)?;
    m.add_function(wrap_pyfunction!(tie_ranks, m)?)?;
    Ok(())
}
