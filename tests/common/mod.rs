//! Shared by the integration tests: where the conformance vectors are.

use std::path::PathBuf;

/// The vector file named by `P2POOL_VECTORS`, by default the one in `../shared`.
pub fn vectors_path() -> PathBuf {
    std::env::var_os("P2POOL_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/vectors/p2pool-legacy-f3d1422.json")
        })
}

/// The vector file's text; a missing file is a failure, never a skip.
pub fn vectors_text() -> String {
    let path = vectors_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "vectors missing at {} (set P2POOL_VECTORS): {e}",
            path.display()
        )
    })
}
