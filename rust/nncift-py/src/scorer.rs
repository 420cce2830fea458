//! Binding of `nncift_core::scorer`: `nncift._core.Scorer` (validated weights) and
//! `nncift._core.ScorerKernel` (a scorer bound to row / column embeddings, the kernel source
//! the selection engine consumes). Arguments are converted here, the GIL is released for
//! every kernel, and errors go through `to_py_err`. The friendly API is
//! `nncift.scorer.PairwiseScorer` in Python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use nncift_core::kernel::block_array;
use nncift_core::scorer::kernel::Isa;
use nncift_core::scorer::{Aggregate, BoundScorer, NetworkWeights, Scorer};
use nncift_core::select::non_negative;
use nncift_core::PairwiseSource;

use crate::to_py_err;
use crate::weights::{format_err, PyNetwork};

/// A C-contiguous float32 view, or a ValueError naming the argument (the Python layer
/// converts float64 / strided input before calling, so this only guards direct callers).
fn view<'a>(a: &'a PyReadonlyArray2<'_, f32>, name: &str) -> PyResult<ArrayView2<'a, f32>> {
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a C-contiguous float32 array (use numpy.ascontiguousarray)"
        )));
    }
    Ok(a.as_array())
}

fn indices(a: &PyReadonlyArray1<'_, i64>, name: &str) -> PyResult<Vec<usize>> {
    non_negative(a.as_array().iter().copied(), |v| {
        format!("{name} contains a negative index ({v})")
    })
    .map_err(to_py_err)
}

/// Validated InfluenceNetwork weights, ready to score (immutable, shareable across threads).
#[pyclass(name = "Scorer", module = "nncift._core", frozen)]
pub struct PyScorer {
    inner: Arc<Scorer>,
}

#[pymethods]
impl PyScorer {
    /// Load and validate a weight file (docs/weights.md). Raises NnciftError for a file
    /// that is missing, corrupt, truncated or breaks the format.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let net = py
            .detach(|| NetworkWeights::from_file(&path))
            .map_err(to_py_err)?;
        Ok(PyScorer {
            inner: Arc::new(Scorer::new(net)),
        })
    }

    /// Build from a validated `nncift.weights.NetworkWeights` (checked again here, so a
    /// bad network raises ValueError). `isa` forces a kernel ("avx512", "avx2",
    /// "generic"), for tests; default: the best this CPU has.
    #[staticmethod]
    #[pyo3(signature = (net, *, isa=None))]
    fn from_network(net: PyNetwork<'_>, isa: Option<&str>) -> PyResult<Self> {
        let isa = Isa::from_name(isa).map_err(to_py_err)?;
        let net = net.into_core().map_err(format_err)?;
        Ok(PyScorer {
            inner: Arc::new(Scorer::with_isa(net, isa)),
        })
    }

    /// Dense scores `(M, N)` float32 for rows `(M, d)` x cols `(N, d)`.
    #[pyo3(signature = (rows, cols, n_jobs=0))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray2<'py, f32>,
        cols: PyReadonlyArray2<'py, f32>,
        n_jobs: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (r, c) = (view(&rows, "rows")?, view(&cols, "cols")?);
        let s = &self.inner;
        let out = py.detach(|| s.score(r, c, n_jobs)).map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }

    /// Dense scores written into `out` `(M, N)` float32 C-contiguous (e.g. a memory-mapped
    /// .npy file), so no second copy is held in memory.
    #[pyo3(signature = (rows, cols, out, n_jobs=0))]
    fn score_into(
        &self,
        py: Python<'_>,
        rows: PyReadonlyArray2<'_, f32>,
        cols: PyReadonlyArray2<'_, f32>,
        mut out: PyReadwriteArray2<'_, f32>,
        n_jobs: usize,
    ) -> PyResult<()> {
        let (r, c) = (view(&rows, "rows")?, view(&cols, "cols")?);
        if !out.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "out must be a C-contiguous float32 array",
            ));
        }
        if out.shape() != [r.nrows(), c.nrows()] {
            return Err(PyValueError::new_err(format!(
                "out has shape {:?}, expected ({}, {})",
                out.shape(),
                r.nrows(),
                c.nrows()
            )));
        }
        let mut o = out.as_array_mut();
        let slice = o
            .as_slice_mut()
            .ok_or_else(|| PyValueError::new_err("out must be C-contiguous"))?;
        let s = &self.inner;
        py.detach(|| s.bind(r, c, n_jobs)?.dense_into(slice, n_jobs))
            .map_err(to_py_err)
    }

    /// Per-row top-k: `(indices (M, k) int64, values (M, k) float32)`, descending, ties to
    /// the lowest column index; never holds the dense matrix.
    #[pyo3(signature = (rows, cols, k, n_jobs=0))]
    #[allow(clippy::type_complexity)]
    fn topk<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray2<'py, f32>,
        cols: PyReadonlyArray2<'py, f32>,
        k: usize,
        n_jobs: usize,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
        let (r, c) = (view(&rows, "rows")?, view(&cols, "cols")?);
        let s = &self.inner;
        let (idx, val) = py
            .detach(|| s.bind(r, c, n_jobs)?.topk(k, n_jobs))
            .map_err(to_py_err)?;
        topk_arrays(py, idx, val, r.nrows(), k)
    }

    /// Per-row aggregate `(M,)` float32: `how` = "mean", "max" or "mean-max" (with `groups`,
    /// `(N,)` int64 ids in 0..G-1, every group used).
    #[pyo3(signature = (rows, cols, how, groups=None, n_jobs=0))]
    fn aggregate<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray2<'py, f32>,
        cols: PyReadonlyArray2<'py, f32>,
        how: &str,
        groups: Option<PyReadonlyArray1<'py, i64>>,
        n_jobs: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (r, c) = (view(&rows, "rows")?, view(&cols, "cols")?);
        let how = Aggregate::parse(how).map_err(to_py_err)?;
        let g = groups.as_ref().map(|g| indices(g, "groups")).transpose()?;
        let s = &self.inner;
        let out = py
            .detach(|| s.bind(r, c, n_jobs)?.aggregate(how, g.as_deref(), n_jobs))
            .map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }

    /// Pointwise scores `(M,)` float32 of a pointwise network.
    #[pyo3(signature = (rows, n_jobs=0))]
    fn pointwise<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray2<'py, f32>,
        n_jobs: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let r = view(&rows, "rows")?;
        let s = &self.inner;
        let out = py.detach(|| s.pointwise(r, n_jobs)).map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }

    /// Precompute the per-item factors once and return a `ScorerKernel` over rows x cols.
    #[pyo3(signature = (rows, cols, n_jobs=0))]
    fn bind(
        &self,
        py: Python<'_>,
        rows: PyReadonlyArray2<'_, f32>,
        cols: PyReadonlyArray2<'_, f32>,
        n_jobs: usize,
    ) -> PyResult<PyScorerKernel> {
        let (r, c) = (view(&rows, "rows")?, view(&cols, "cols")?);
        let s = &self.inner;
        let bound = py.detach(|| s.bind(r, c, n_jobs)).map_err(to_py_err)?;
        Ok(PyScorerKernel {
            inner: Arc::new(bound),
        })
    }

    /// All metadata strings of the weight file.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.inner.network().metadata().clone()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.network().kind().as_str()
    }
    #[getter]
    fn input_layout(&self) -> &'static str {
        self.inner.network().layout().as_str()
    }
    #[getter]
    fn cosine_feature(&self) -> bool {
        self.inner.network().cosine_feature()
    }
    #[getter]
    fn embedding_dim(&self) -> usize {
        self.inner.network().embedding_dim()
    }
    #[getter]
    fn embedding_model(&self) -> String {
        self.inner.network().embedding_model().to_string()
    }
    #[getter]
    fn label_scale(&self) -> f64 {
        self.inner.network().label_scale()
    }
    #[getter]
    fn label_offset(&self) -> f64 {
        self.inner.network().label_offset()
    }
    #[getter]
    fn label_name(&self) -> Option<String> {
        self.inner.network().label_name().map(str::to_string)
    }
    #[getter]
    fn cosine_weight(&self) -> Option<f32> {
        self.inner.network().cosine_weight()
    }
    #[getter]
    fn bilinear_rank(&self) -> Option<usize> {
        self.inner.network().bilinear_rank()
    }
    #[getter]
    fn hidden_sizes(&self) -> Vec<usize> {
        self.inner.network().hidden_sizes()
    }
    /// Number of linear layers.
    #[getter]
    fn depth(&self) -> usize {
        self.inner.network().depth()
    }
    /// Instruction set of the pair kernel: "avx512", "avx2" or "generic".
    #[getter]
    fn isa(&self) -> &'static str {
        self.inner.isa().name()
    }
}

#[allow(clippy::type_complexity)]
fn topk_arrays(
    py: Python<'_>,
    idx: Vec<i64>,
    val: Vec<f32>,
    m: usize,
    k: usize,
) -> PyResult<(Bound<'_, PyArray2<i64>>, Bound<'_, PyArray2<f32>>)> {
    let shape_err = |e: ndarray::ShapeError| PyValueError::new_err(e.to_string());
    let i = Array2::from_shape_vec((m, k), idx).map_err(shape_err)?;
    let v = Array2::from_shape_vec((m, k), val).map_err(shape_err)?;
    Ok((i.into_pyarray(py), v.into_pyarray(py)))
}

/// A scorer bound to row and column embeddings: the virtual matrix `K[i, j]`, computed
/// on request. Pass it to the selection engine as a kernel source (no M x N matrix).
#[pyclass(name = "ScorerKernel", module = "nncift._core", frozen)]
pub struct PyScorerKernel {
    inner: Arc<BoundScorer>,
}

impl PyScorerKernel {
    /// The bound scorer as the selection engine's kernel source.
    pub fn source(&self) -> Arc<dyn PairwiseSource + Send + Sync> {
        self.inner.clone()
    }
}

#[pymethods]
impl PyScorerKernel {
    #[getter]
    fn n_rows(&self) -> usize {
        self.inner.rows()
    }
    #[getter]
    fn n_cols(&self) -> usize {
        self.inner.cols()
    }
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.inner.rows(), self.inner.cols())
    }

    /// `K[rows][:, cols]` as a `(len(rows), len(cols))` float32 array; indices int64.
    fn block<'py>(
        &self,
        py: Python<'py>,
        rows: PyReadonlyArray1<'py, i64>,
        cols: PyReadonlyArray1<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (r, c) = (indices(&rows, "rows")?, indices(&cols, "cols")?);
        let inner = &self.inner;
        let out = py
            .detach(|| block_array(inner.as_ref(), &r, &c))
            .map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }

    /// The whole matrix `(M, N)` float32 (refused if it cannot fit in memory).
    #[pyo3(signature = (n_jobs=0))]
    fn dense<'py>(&self, py: Python<'py>, n_jobs: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let inner = &self.inner;
        let out = py.detach(|| inner.dense(n_jobs)).map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }

    /// Per-row top-k, as `Scorer.topk`.
    #[pyo3(signature = (k, n_jobs=0))]
    #[allow(clippy::type_complexity)]
    fn topk<'py>(
        &self,
        py: Python<'py>,
        k: usize,
        n_jobs: usize,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
        let inner = &self.inner;
        let (idx, val) = py.detach(|| inner.topk(k, n_jobs)).map_err(to_py_err)?;
        topk_arrays(py, idx, val, inner.rows(), k)
    }

    /// Per-row aggregate, as `Scorer.aggregate`.
    #[pyo3(signature = (how, groups=None, n_jobs=0))]
    fn aggregate<'py>(
        &self,
        py: Python<'py>,
        how: &str,
        groups: Option<PyReadonlyArray1<'py, i64>>,
        n_jobs: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let how = Aggregate::parse(how).map_err(to_py_err)?;
        let g = groups.as_ref().map(|g| indices(g, "groups")).transpose()?;
        let inner = &self.inner;
        let out = py
            .detach(|| inner.aggregate(how, g.as_deref(), n_jobs))
            .map_err(to_py_err)?;
        Ok(out.into_pyarray(py))
    }
}

/// Add the scorer classes to `nncift._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyScorer>()?;
    m.add_class::<PyScorerKernel>()?;
    Ok(())
}
