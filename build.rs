//! Generates the straight-line selection networks (`$OUT_DIR/networks.rs`) from
//! `rust/netgen.rs`, the same generator the crate uses for its interpreted networks.

#[path = "rust/netgen.rs"]
mod netgen;

fn main() {
    println!("cargo::rerun-if-changed=rust/netgen.rs");
    println!("cargo::rerun-if-changed=build.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("networks.rs"), netgen::generate()).expect("write networks.rs");
}
