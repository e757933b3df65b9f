//! Marks the build as having a PostgreSQL server for the test suite, so that the PostgreSQL variants
//! of the integration tests are reported as ignored, not as passed, when there is none.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(keywarden_postgres_tests)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KEYWARDEN_TEST_POSTGRES_URL");
    if std::env::var("KEYWARDEN_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=keywarden_postgres_tests");
    }
}
