//! The one error type of the core. The Python binding maps `Shape` and `Value`
//! to `ValueError` and everything else to `nncift.NnciftError`.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// Arrays whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A value outside what the function accepts (NaN, negative budget, ...).
    #[error("invalid value: {0}")]
    Value(String),
    /// A weight file or other serialised input that is malformed.
    #[error("invalid format: {0}")]
    Format(String),
    /// A request that would not fit in memory; refused before allocating.
    #[error("memory: {0}")]
    Memory(String),
    /// Anything else that went wrong at run time.
    #[error("{0}")]
    Runtime(String),
}

impl CoreError {
    /// The message without its kind prefix (for callers that re-wrap it).
    pub fn message(&self) -> &str {
        match self {
            CoreError::Shape(m)
            | CoreError::Value(m)
            | CoreError::Format(m)
            | CoreError::Memory(m)
            | CoreError::Runtime(m) => m,
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
