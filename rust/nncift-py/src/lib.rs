//! `nncift._core`: argument conversion, GIL release and error mapping only.
//! Algorithms live in `nncift-core`.

pub mod scorer;
mod select;
mod weights;

use nncift_core::CoreError;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

// Qualified with the package so that `NnciftError.__module__ == "nncift._core"`: pickle
// finds the class by that name (Ray workers send errors across processes).
create_exception!(
    nncift._core,
    NnciftError,
    PyException,
    "Base error of nncift for failures that are not a bad argument value."
);

/// The one error funnel from the core to Python.
pub(crate) fn to_py_err(err: CoreError) -> PyErr {
    match err {
        CoreError::Shape(_) | CoreError::Value(_) => PyValueError::new_err(err.to_string()),
        _ => NnciftError::new_err(err.to_string()),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", nncift_core::VERSION)?;
    m.add("NnciftError", m.py().get_type::<NnciftError>())?;
    scorer::register(m)?;
    select::register(m)?;
    weights::register(m)?;
    Ok(())
}
