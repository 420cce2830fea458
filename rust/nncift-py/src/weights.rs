//! Binding of `nncift_core::scorer::weights`, the one validator of the weight format:
//! `check_network(net)` and `read_network(path)` for `nncift.weights`, and the
//! conversion of a Python `nncift.weights.NetworkWeights` (read by attribute) into the
//! core's validated `NetworkWeights`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use nncift_core::scorer::{Kind, Layout, NetworkMeta, NetworkWeights};
use nncift_core::CoreError;

/// The fields of `nncift.weights.NetworkWeights`, by attribute (arrays already float32).
#[derive(FromPyObject)]
pub(crate) struct PyNetwork<'py> {
    layers: Vec<(PyReadonlyArray2<'py, f32>, PyReadonlyArray1<'py, f32>)>,
    kind: String,
    input_layout: String,
    embedding_dim: usize,
    embedding_model: String,
    label_scale: f64,
    label_offset: f64,
    cosine_feature: bool,
    cosine_weight: Option<f32>,
    bilinear: Option<(PyReadonlyArray2<'py, f32>, PyReadonlyArray2<'py, f32>)>,
    label_name: Option<String>,
    extra_metadata: BTreeMap<String, String>,
}

impl PyNetwork<'_> {
    /// Validate into the core type (one copy of the arrays).
    pub(crate) fn into_core(self) -> Result<NetworkWeights, CoreError> {
        let layers: Vec<(Array2<f32>, Array1<f32>)> = self
            .layers
            .iter()
            .map(|(w, b)| (w.as_array().to_owned(), b.as_array().to_owned()))
            .collect();
        let bilinear = self
            .bilinear
            .as_ref()
            .map(|(u, v)| (u.as_array().to_owned(), v.as_array().to_owned()));
        let meta = NetworkMeta {
            kind: Kind::parse(&self.kind)?,
            layout: Layout::parse(&self.input_layout)?,
            cosine_feature: self.cosine_feature,
            embedding_dim: self.embedding_dim,
            embedding_model: self.embedding_model,
            label_scale: self.label_scale,
            label_offset: self.label_offset,
            label_name: self.label_name,
        };
        NetworkWeights::new(layers, self.cosine_weight, bilinear, meta)?
            .with_extra_metadata(self.extra_metadata)
    }
}

/// A weight-format error as a ValueError carrying the core's message (no kind prefix),
/// which `nncift.weights` re-raises as `WeightFileError`.
pub(crate) fn format_err(err: CoreError) -> PyErr {
    PyValueError::new_err(err.message().to_string())
}

/// Validate a `NetworkWeights` (ValueError naming the broken rule).
#[pyfunction]
fn check_network(net: PyNetwork<'_>) -> PyResult<()> {
    net.into_core().map(drop).map_err(format_err)
}

/// Read and validate a weight file; returns the `NetworkWeights` fields as a dict.
#[pyfunction]
fn read_network(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let net = py
        .detach(|| NetworkWeights::from_file(&path))
        .map_err(format_err)?;
    let layers = (0..net.depth())
        .filter_map(|k| net.layer(k))
        .map(|(w, b)| (w.clone().into_pyarray(py), b.clone().into_pyarray(py)))
        .collect::<Vec<_>>();
    let out = PyDict::new(py);
    out.set_item("layers", layers)?;
    out.set_item("kind", net.kind().as_str())?;
    out.set_item("input_layout", net.layout().as_str())?;
    out.set_item("embedding_dim", net.embedding_dim())?;
    out.set_item("embedding_model", net.embedding_model())?;
    out.set_item("label_scale", net.label_scale())?;
    out.set_item("label_offset", net.label_offset())?;
    out.set_item("cosine_feature", net.cosine_feature())?;
    out.set_item("cosine_weight", net.cosine_weight())?;
    let bilinear = net
        .bilinear_ref()
        .map(|(u, v)| (u.clone().into_pyarray(py), v.clone().into_pyarray(py)));
    out.set_item("bilinear", bilinear)?;
    out.set_item("label_name", net.label_name())?;
    out.set_item("extra_metadata", net.extra_metadata())?;
    Ok(out)
}

/// Add the weight-format functions to `nncift._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_network, m)?)?;
    m.add_function(wrap_pyfunction!(read_network, m)?)?;
    Ok(())
}
