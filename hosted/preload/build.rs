//! Link options of `libapexalloc.so`.
//!
//! - SONAME `libapexalloc.so.0`: programs linked with `-lapexalloc` record
//!   the ABI version, and an installed `libapexalloc.so.0` serves them (see
//!   `install.sh`); preloading by path is unaffected.
//! - The version script `exports.map`: only the C API and the C++
//!   operators are exported. rustc already passes a version script of its
//!   own for a cdylib (every `#[no_mangle]` function), which LLD merges with
//!   this one; GNU ld refuses a second anonymous version script, so the
//!   script is added only when the linker is LLD (the default of rustc 1.90
//!   and later on x86_64 Linux). `APEX_VERSION_SCRIPT=1` or `=0` overrides
//!   the guess.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=exports.map");
    println!("cargo:rerun-if-env-changed=APEX_VERSION_SCRIPT");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libapexalloc.so.0");

    let use_script = match env::var("APEX_VERSION_SCRIPT").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => linker_is_lld(),
    };
    if use_script {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/exports.map");
    } else {
        println!(
            "cargo:warning=exports.map not applied (the linker is not LLD, or APEX_VERSION_SCRIPT=0): \
             rust_eh_personality stays exported; APEX_VERSION_SCRIPT=1 forces it"
        );
    }
}

/// Whether the final link goes through LLD: rustc 1.90 and later link
/// x86_64-unknown-linux-gnu with its own LLD unless the flags opt out.
fn linker_is_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let mentions = |needle: &str| flags.iter().any(|f| f.contains(needle));
    if mentions("-fuse-ld=lld") || mentions("linker-features=+lld") {
        return true;
    }
    if mentions("-fuse-ld=")
        || mentions("linker-features=-lld")
        || mentions("link-self-contained=-linker")
    {
        return false;
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
