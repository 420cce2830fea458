//! The one ordering of candidates used everywhere a best item is chosen (greedy
//! selection, the kNN kernel's neighbour lists, the scorer's per-row top-k):
//! the larger value wins; equal values go to the lower tie rank, then to the
//! lower index. The tie rank is the seeded permutation of the pool
//! ([`crate::select::tie_ranks`]) in selection and the index itself where no
//! seed applies (the scorer's top-k), which is "ties to the lowest index".
//!
//! Values compare with `total_cmp`, a total order on floats, so the order is
//! well defined even for `-0.0` and NaN and no two distinct items are equal.

use std::cmp::Ordering;

/// A float that can be compared totally (`f32`, `f64`).
pub trait TotalOrder: Copy {
    fn total_order(&self, other: &Self) -> Ordering;
}

impl TotalOrder for f32 {
    #[inline]
    fn total_order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl TotalOrder for f64 {
    #[inline]
    fn total_order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

/// A candidate under the one ordering: "greater" means better (larger `value`,
/// then lower `rank`, then lower `idx`). A `BinaryHeap<Ranked<_>>` pops the best;
/// a `BinaryHeap<Reverse<Ranked<_>>>` keeps the worst of a kept top-k on top.
#[derive(Debug, Clone, Copy)]
pub struct Ranked<V> {
    pub value: V,
    /// Tie rank (lower wins an exact tie of `value`).
    pub rank: u64,
    pub idx: usize,
}

impl<V: TotalOrder> Ranked<V> {
    #[inline]
    pub fn new(value: V, rank: u64, idx: usize) -> Self {
        Self { value, rank, idx }
    }

    /// Rank taken from a per-item table: `Ranked::new(value, ranks[idx], idx)`.
    #[inline]
    pub fn of(value: V, ranks: &[u64], idx: usize) -> Self {
        Self::new(value, ranks[idx], idx)
    }

    /// Tie rank equal to the index ("ties to the lowest index").
    #[inline]
    pub fn by_index(value: V, idx: usize) -> Self {
        Self::new(value, idx as u64, idx)
    }
}

impl<V: TotalOrder> PartialEq for Ranked<V> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<V: TotalOrder> Eq for Ranked<V> {}

impl<V: TotalOrder> PartialOrd for Ranked<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<V: TotalOrder> Ord for Ranked<V> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.value
            .total_order(&other.value)
            .then_with(|| (other.rank, other.idx).cmp(&(self.rank, self.idx)))
    }
}

#[cfg(test)]
mod tests {
    use super::Ranked;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn larger_value_then_lower_rank_then_lower_index() {
        assert!(Ranked::new(2.0f32, 9, 9) > Ranked::new(1.0, 0, 0));
        assert!(Ranked::new(1.0f64, 0, 5) > Ranked::new(1.0, 1, 0));
        assert!(Ranked::new(1.0f64, 3, 2) > Ranked::new(1.0, 3, 4));
        assert!(Ranked::by_index(0.0f32, 1) > Ranked::by_index(-0.0, 0));
    }

    #[test]
    fn reversed_heap_keeps_the_worst_on_top() {
        let mut h: BinaryHeap<Reverse<Ranked<f32>>> = BinaryHeap::new();
        for (i, v) in [3.0, 1.0, 3.0, 2.0].into_iter().enumerate() {
            h.push(Reverse(Ranked::by_index(v, i)));
        }
        let order: Vec<usize> = h.into_sorted_vec().iter().map(|r| r.0.idx).collect();
        assert_eq!(order, vec![0, 2, 3, 1]);
    }
}
