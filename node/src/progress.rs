//! Where a deployment's progress lines live in the node's store: the
//! executor writes them, follow queries read them.

use shoal_protocol::TeamId;

/// The store namespace of a deployment's progress lines on its node; keys
/// are `<try:06>/<seq:06>`.
pub fn progress_ns(team: &TeamId, deployment: &str) -> String {
    format!("progress/{}/{deployment}", team.to_hex())
}

/// The store key of a progress line.
pub fn progress_key(attempt: u32, seq: u32) -> String {
    format!("{attempt:06}/{seq:06}")
}

/// The try a progress line's key belongs to.
pub fn progress_try(key: &str) -> Option<u32> {
    parse_progress_key(key).map(|(attempt, _)| attempt)
}

/// The progress keys to delete when try `current` starts so that only the
/// `kept` newest tries (`current` included) keep their lines.
pub fn progress_to_prune<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    current: u32,
    kept: u32,
) -> Vec<String> {
    let oldest_kept = current.saturating_sub(kept.saturating_sub(1));
    keys.into_iter()
        .filter(|k| progress_try(k).is_some_and(|t| t < oldest_kept))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn parse_progress_key(key: &str) -> Option<(u32, u32)> {
    let (a, s) = key.split_once('/')?;
    Some((a.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::{progress_key, progress_to_prune, progress_try};

    #[test]
    fn only_the_newest_tries_keep_their_progress() {
        let keys: Vec<String> = (1..=7)
            .flat_map(|t| (1..=2).map(move |s| progress_key(t, s)))
            .collect();
        assert_eq!(progress_try(&keys[0]), Some(1));
        // Try 7 starts, 5 kept: tries 3..=7 stay.
        let pruned = progress_to_prune(keys.iter().map(String::as_str), 7, 5);
        assert_eq!(
            pruned,
            [
                progress_key(1, 1),
                progress_key(1, 2),
                progress_key(2, 1),
                progress_key(2, 2)
            ]
        );
        // Early tries prune nothing; keys that are not progress lines stay.
        assert!(progress_to_prune(keys.iter().map(String::as_str), 3, 5).is_empty());
        assert!(progress_to_prune(["junk", "x/y"], 100, 5).is_empty());
    }
}
