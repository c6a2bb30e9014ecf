use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::{Allocation, CidrPool, CidrPoolError, plan_allocation, select_free_cidr};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn first_free_block_skips_used_ones_of_any_size() {
    let cluster = net("10.244.0.0/16");
    assert_eq!(
        select_free_cidr(cluster, 24, &[]).unwrap(),
        net("10.244.0.0/24")
    );
    let used = [
        net("10.244.0.0/24"),
        net("10.244.1.128/25"),
        net("10.244.2.0/23"),
        net("10.0.0.0/8").trunc(),
    ];
    // 10.0.0.0/8 contains the whole cluster: everything is taken.
    assert!(matches!(
        select_free_cidr(cluster, 24, &used),
        Err(CidrPoolError::Exhausted { .. })
    ));
    let used = &used[..3];
    assert_eq!(
        select_free_cidr(cluster, 24, used).unwrap(),
        net("10.244.4.0/24")
    );
    // A used block bigger than the candidates skips them all at once.
    assert_eq!(
        select_free_cidr(cluster, 26, &[net("10.244.0.0/22")]).unwrap(),
        net("10.244.4.0/26")
    );
    // Other-family and out-of-cluster entries do not matter.
    assert_eq!(
        select_free_cidr(cluster, 24, &[net("fd00::/64"), net("10.245.0.0/24")]).unwrap(),
        net("10.244.0.0/24")
    );
}

#[test]
fn pool_exhaustion_is_an_error() {
    let cluster = net("10.244.0.0/23");
    let used = [net("10.244.0.0/24"), net("10.244.1.0/24")];
    assert_eq!(
        select_free_cidr(cluster, 24, &used),
        Err(CidrPoolError::Exhausted { cluster, mask: 24 })
    );
    let whole = net("0.0.0.0/0");
    assert_eq!(
        select_free_cidr(whole, 0, &[whole]),
        Err(CidrPoolError::Exhausted {
            cluster: whole,
            mask: 0
        })
    );
    assert_eq!(
        select_free_cidr(whole, 1, &[net("0.0.0.0/1")]).unwrap(),
        net("128.0.0.0/1")
    );
}

#[test]
fn huge_ipv6_pool_is_fast() {
    let cluster = net("fd00:10::/48");
    let used: Vec<IpNet> = (0..1000u32)
        .map(|i| IpNet::new(format!("fd00:10:0:{i:x}::").parse().unwrap(), 64).unwrap())
        .collect();
    assert_eq!(
        select_free_cidr(cluster, 64, &used).unwrap(),
        net("fd00:10:0:3e8::/64")
    );
    let everything = net("::/0");
    assert_eq!(
        select_free_cidr(everything, 128, &[everything]),
        Err(CidrPoolError::Exhausted {
            cluster: everything,
            mask: 128
        })
    );
}

#[test]
fn mask_must_fit_the_cluster() {
    let cluster = net("10.244.0.0/16");
    assert!(matches!(
        CidrPool::new(cluster, 8),
        Err(CidrPoolError::InvalidMask {
            min: 16,
            max: 32,
            ..
        })
    ));
    assert!(matches!(
        select_free_cidr(cluster, 33, &[]),
        Err(CidrPoolError::InvalidMask { .. })
    ));
    assert_eq!(
        CidrPool::new(net("10.244.7.9/16"), 24)
            .unwrap()
            .cluster_cidr,
        cluster
    );
}

#[test]
fn existing_claim_is_reused_and_others_are_avoided() {
    let pool = CidrPool::new(net("10.244.0.0/16"), 24).unwrap();
    let claims = BTreeMap::from([
        ("n1".to_owned(), "10.244.0.0/24".to_owned()),
        ("n2".to_owned(), "10.244.1.0/24".to_owned()),
        ("junk".to_owned(), "not-a-cidr".to_owned()),
    ]);
    assert_eq!(
        plan_allocation(&pool, "n2", &claims, None, &[]).unwrap(),
        Allocation::Existing(net("10.244.1.0/24"))
    );
    // Controller-manager podCIDRs and other nodes' annotations are avoided too.
    let other_used = [net("10.244.2.0/24"), net("10.244.3.0/24")];
    assert_eq!(
        plan_allocation(&pool, "n3", &claims, None, &other_used).unwrap(),
        Allocation::New(net("10.244.4.0/24"))
    );
}

#[test]
fn claim_outside_the_pool_is_replaced() {
    let pool = CidrPool::new(net("10.244.0.0/16"), 24).unwrap();
    let claims = BTreeMap::from([("n1".to_owned(), "10.99.0.0/24".to_owned())]);
    assert_eq!(
        plan_allocation(&pool, "n1", &claims, None, &[]).unwrap(),
        Allocation::New(net("10.244.0.0/24"))
    );
    let claims = BTreeMap::from([("n1".to_owned(), "10.244.0.0/25".to_owned())]);
    assert_eq!(
        plan_allocation(&pool, "n1", &claims, None, &[]).unwrap(),
        Allocation::New(net("10.244.0.0/24"))
    );
}

#[test]
fn own_annotation_is_reclaimed_only_when_still_free() {
    let pool = CidrPool::new(net("10.244.0.0/16"), 24).unwrap();
    let mine = net("10.244.9.0/24");
    let empty = BTreeMap::new();
    assert_eq!(
        plan_allocation(&pool, "n1", &empty, Some(mine), &[]).unwrap(),
        Allocation::New(mine)
    );
    let taken = BTreeMap::from([("n2".to_owned(), "10.244.9.0/24".to_owned())]);
    assert_eq!(
        plan_allocation(&pool, "n1", &taken, Some(mine), &[]).unwrap(),
        Allocation::New(net("10.244.0.0/24"))
    );
}

#[test]
fn sequential_claims_never_overlap() {
    let pool = CidrPool::new(net("10.244.0.0/20"), 24).unwrap();
    let mut claims = BTreeMap::new();
    for i in 0..16 {
        let node = format!("n{i}");
        let c = plan_allocation(&pool, &node, &claims, None, &[])
            .unwrap()
            .cidr();
        assert!(
            claims
                .values()
                .all(|v: &String| !crate::cidr_pool::overlaps(&net(v), &c))
        );
        claims.insert(node, c.to_string());
    }
    assert!(matches!(
        plan_allocation(&pool, "n16", &claims, None, &[]),
        Err(CidrPoolError::Exhausted { .. })
    ));
}
