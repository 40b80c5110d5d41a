//! Lays out the `shoal` binary so the code a daemon runs sits together.
//!
//! A daemon runs a few MB of the binary's ~28 MB of code, spread over
//! every crate. The kernel maps code in 64 KB windows around each page a
//! process touches, so scattered code keeps most of the binary resident.
//! `link/*.order` lists, per build profile, the functions a daemon ran
//! while it started, formed a team, took ops and idled
//! (`scripts/order-symbols.sh` writes them); the linker puts those first.
//! A name that is not in the binary (another profile's, or one gone since
//! the list was written) is skipped, so a stale list costs memory, never a
//! failed build.

use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-env-changed=SHOAL_NO_SYMBOL_ORDER");
    if !uses_rust_lld() || env::var_os("SHOAL_NO_SYMBOL_ORDER").is_some() {
        return;
    }
    // Symbol names carry a hash of the build profile: debug builds never
    // match a list, and skipping them keeps their link fast.
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let mut lists: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "order"))
        .collect();
    lists.sort();
    let mut all = String::new();
    for list in &lists {
        println!("cargo:rerun-if-changed={}", list.display());
        match fs::read_to_string(list) {
            Ok(text) => all.push_str(&text),
            Err(e) => println!("cargo:warning=cannot read {}: {e}", list.display()),
        }
    }
    if all.is_empty() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("symbols.order");
    if let Err(e) = fs::write(&out, all) {
        println!("cargo:warning=cannot write {}: {e}", out.display());
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        out.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether the binary is linked by rustc's bundled LLD (the default for
/// x86_64-unknown-linux-gnu since Rust 1.90), which takes a symbol ordering
/// file; GNU ld does not. A linker chosen in the config or in RUSTFLAGS
/// turns the ordering off.
fn uses_rust_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    !flags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"))
}
