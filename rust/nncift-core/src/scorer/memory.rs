//! The memory guard: refuse a dense request that cannot fit before allocating it.

use crate::error::{CoreError, CoreResult};

/// Bytes the kernel reports as available for new allocations (`MemAvailable` in
/// `/proc/meminfo`), or `None` where that is unknown (non-Linux), in which case the guard
/// lets the request through and the allocator decides.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Fail with [`CoreError::Memory`] if a dense `rows x cols` float32 result would not fit in
/// the memory available now. The message points to the streaming alternatives.
pub fn check_dense_fits(rows: usize, cols: usize) -> CoreResult<()> {
    let Some(bytes) = (rows as u128)
        .checked_mul(cols as u128)
        .and_then(|v| v.checked_mul(4))
    else {
        return Err(too_big(rows, cols, u128::MAX, available_memory()));
    };
    match available_memory() {
        Some(avail) if bytes > avail as u128 => Err(too_big(rows, cols, bytes, Some(avail))),
        _ if bytes > isize::MAX as u128 => Err(too_big(rows, cols, bytes, None)),
        _ => Ok(()),
    }
}

fn too_big(rows: usize, cols: usize, bytes: u128, avail: Option<u64>) -> CoreError {
    const GIB: f64 = (1u64 << 30) as f64;
    let avail = avail.map_or("an unknown amount".to_string(), |a| {
        format!("{:.2} GiB", a as f64 / GIB)
    });
    CoreError::Memory(format!(
        "a dense {rows} x {cols} float32 matrix needs {:.2} GiB but only {avail} of memory is \
         available; use top-k or aggregate scoring (they never hold the matrix), score it in \
         blocks of rows, or write it to a memory-mapped .npy file",
        bytes as f64 / GIB
    ))
}
