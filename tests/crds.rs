//! The checked-in CRDs must be exactly what the code generates.

#[test]
fn checked_in_crds_match_the_code() {
    let generated = ferry::api::crds_yaml().expect("generating CRDs");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/ferry.dev.yaml");
    let checked_in = std::fs::read_to_string(path).expect("reading crds/ferry.dev.yaml");
    assert!(
        generated == checked_in,
        "crds/ferry.dev.yaml is stale; regenerate it with `cargo run -- crds > crds/ferry.dev.yaml`"
    );
}
