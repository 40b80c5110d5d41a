//! Hybrid logical clock: wall-clock milliseconds plus a counter, so that
//! causally later ops always carry a larger time even when clocks drift.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Ops further than this in the future (by the local clock) wait until it is
/// reached; see `Replica::apply`.
pub const MAX_FUTURE_MS: u64 = 10 * 60 * 1000;

/// The largest counter an op may carry; ops with a larger one are refused.
/// The counter only orders events within one millisecond, so no honest
/// writer comes near it, and [`Hlc::next`] moves to the next millisecond
/// once it is reached: whatever time an op carries (at most
/// [`MAX_FUTURE_MS`] ahead, or it waits), an honest writer can always make a
/// later one. Without the bound, one op with the counter at `u32::MAX` would
/// leave no later time in its millisecond and stall every writer until the
/// wall clock passed it.
pub const MAX_COUNTER: u32 = 1 << 20;

#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    autosurgeon::Hydrate,
    autosurgeon::Reconcile,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Orders events within one millisecond.
    pub c: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc { ms: 0, c: 0 };

    pub fn new(ms: u64, c: u32) -> Self {
        Self { ms, c }
    }

    /// The next time after `self` (the largest time seen so far) given the
    /// local wall clock. The counter never passes [`MAX_COUNTER`]: past it
    /// the time moves to the next millisecond.
    pub fn next(self, now_ms: u64) -> Hlc {
        if now_ms > self.ms {
            Hlc { ms: now_ms, c: 0 }
        } else if self.c >= MAX_COUNTER {
            Hlc {
                ms: self.ms.saturating_add(1),
                c: 0,
            }
        } else {
            Hlc {
                ms: self.ms,
                c: self.c + 1,
            }
        }
    }

    /// Seconds since the epoch, for display.
    pub fn secs(self) -> u64 {
        self.ms / 1000
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms, self.c)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms, self.c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_strictly_increasing() {
        let t = Hlc::new(1000, 0);
        assert!(
            t.next(500) > t,
            "a clock behind the last time still advances"
        );
        assert!(t.next(1000) > t);
        assert_eq!(t.next(2000), Hlc::new(2000, 0));
        assert_eq!(t.next(999), Hlc::new(1000, 1));
    }

    #[test]
    fn next_moves_to_the_next_millisecond_at_the_counter_bound() {
        let t = Hlc::new(1000, MAX_COUNTER);
        assert_eq!(t.next(500), Hlc::new(1001, 0));
        assert!(t.next(500) > t);
        let t = Hlc::new(1000, u32::MAX);
        assert!(
            t.next(1000) > t,
            "even a time past the bound has a successor"
        );
    }
}
