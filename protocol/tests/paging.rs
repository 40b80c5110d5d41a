#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Anti-entropy answers are bounded: a peer gets a page of what it lacks,
//! in causal order, and asks again until it has everything.

use shoal_protocol::Replica;
use shoal_protocol::replica::VersionVector;
use shoal_protocol::testkit::history;

#[test]
fn missing_ops_come_in_bounded_causal_pages() {
    let (genesis, ops) = history(120);
    let mut full = Replica::from_genesis(genesis.clone()).unwrap();
    for o in &ops {
        full.apply(o.clone(), u64::MAX / 2);
    }
    let mut peer = Replica::from_genesis(genesis).unwrap();
    let mut rounds = 0;
    loop {
        let vv: VersionVector = peer.version_vector();
        let (page, more) = full.missing_page(&vv, 25, 1 << 20);
        assert!(page.len() <= 25);
        assert_eq!(page.len(), full.missing_for(&vv).len().min(25));
        for a in page {
            // Causal order: every op of a page applies at once.
            let rep = peer.apply(a.op.clone(), u64::MAX / 2);
            assert_eq!(rep.applied, vec![a.hash], "{rep:?}");
        }
        rounds += 1;
        if !more {
            break;
        }
    }
    assert!(rounds > 1);
    assert_eq!(peer.heads(), full.heads());
    // A byte bound alone still sends at least one op per page.
    let (page, more) = full.missing_page(&VersionVector::new(), usize::MAX, 1);
    assert_eq!(page.len(), 1);
    assert!(more);
}
