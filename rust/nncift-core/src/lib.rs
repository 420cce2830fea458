//! nncift-core: the numeric kernels of nncift, in pure Rust (no Python here).
//!
//! Orientation convention (see docs/method in the repository): every pairwise
//! matrix is `K[row, col]`, rows = pool items, columns = target (or pool) items.

pub mod error;
pub mod kernel;
mod linalg;
mod order;
pub mod scorer;
pub mod select;

pub use error::{CoreError, CoreResult};
pub use kernel::PairwiseSource;

/// Version of the core crate, exposed to Python as `nncift._core.__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Build a rayon pool with `n_jobs` threads (0 = all cores) for one call, so
/// that no worker threads outlive the call (torch forks DataLoader workers).
pub fn thread_pool(n_jobs: usize) -> CoreResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_jobs)
        .build()
        .map_err(|e| CoreError::Runtime(format!("cannot start a thread pool: {e}")))
}
