//! Pure logic with no IO: IPAM, endpoint table; later identities, policy and services.
