//! (shoal patch) Writing a new object and everything inside it at once.

use crate::ScalarValue;

/// What one op of [`Transaction::put_fresh`](super::Transaction::put_fresh)
/// writes.
#[derive(Debug, Clone, PartialEq)]
pub enum FreshValue {
    Scalar(ScalarValue),
    Map,
    List,
}

/// One op of [`Transaction::put_fresh`](super::Transaction::put_fresh), in
/// the order the ops are to be made (their op ids follow that order).
#[derive(Debug, Clone, PartialEq)]
pub struct FreshOp {
    /// The object written into: 0 is the new object itself, `i + 1` the
    /// object the `i`th op made. It must come before this op.
    pub parent: usize,
    /// The key in a map, or `None` to append to a list.
    pub key: Option<String>,
    pub value: FreshValue,
}
