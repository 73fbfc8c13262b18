//! The local-or-remote decision of `#[remote]` calls, with `FLASH_RESOURCE_NAME` set.
//! (A test binary of its own, with a single test: it changes the process environment.)

use flash_sdk::{ErrorKind, ResourceConfig, Result, remote};

const MINE: ResourceConfig = ResourceConfig::queue("mine").cpu(&[]);
const THEIRS: ResourceConfig = ResourceConfig::queue("theirs");

#[remote(MINE)]
fn local_add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

#[remote(THEIRS)]
fn remote_add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

#[test]
fn calls_go_to_the_peer_unless_the_config_is_served_here() {
    // SAFETY: the only test of this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var(flash_sdk::RESOURCE_NAME_VAR, "mine") };
    assert_eq!(flash_sdk::current_resource().as_deref(), Some("mine"));
    assert_eq!(local_add(1, 2), Ok(3));
    // Natively there is no host: the peer path reports `unavailable`.
    let err = remote_add(1, 2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("`remote_add`"), "{err}");

    unsafe { std::env::set_var(flash_sdk::RESOURCE_NAME_VAR, "") };
    assert_eq!(
        remote_add(1, 2),
        Ok(3),
        "an empty name means every config is local"
    );
}
