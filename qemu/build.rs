//! Links every kernel (main binary and test kernels) with `kernel.ld`.

use std::env;

fn main() {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg=-T{dir}/kernel.ld");
        if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
            // defmt's build script puts defmt.x on the linker search path.
            println!("cargo:rustc-link-arg=-Tdefmt.x");
        }
    }
    println!("cargo:rerun-if-changed=kernel.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
