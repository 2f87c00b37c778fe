#!/usr/bin/env bash
# Build the MRTD oracle for measurements/tests/tdx.rs: the TDVF MRTD code of crates.io's
# `mosaik` 0.3.13 (flashbots/mosaik, src/tee/tdx/builder/mrtd.rs, MIT), compiled unmodified
# into a throw-away binary outside the workspace. mosaik exposes that code only inside its
# image builder, so the file is included with #[path] next to a small main.
#
#   measurements/tests/oracle/mosaik-mrtd.sh [DIR]   # default /tmp/nacre-mosaik-mrtd
#   NACRE_MOSAIK_MRTD=DIR/target/release/mosaik-mrtd cargo test -p nacre-measure --test tdx
#
# mosaik's order is "all PAGE.ADDs of a section, then its MR.EXTENDs" (nacre's
# PageAddOrder::PerSection).
set -euo pipefail
dir=${1:-/tmp/nacre-mosaik-mrtd}
crate_sha256=e4873b7447c07b219b8ec0bb778af966a01930491ef6c8c0a63d10146756a890
mrtd_rs_sha256=de0afb6a59710a8058b03b74673f5f74a39eadc808767912cd570be50652fc42
mkdir -p "$dir/src"
cd "$dir"
# Let cargo download the published crate into its cache (crates.io, checksum-verified).
cargo info mosaik@0.3.13 >/dev/null
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/mosaik-0.3.13.crate | head -n1)
echo "$crate_sha256  $crate" | sha256sum -c --quiet
rm -rf crate && mkdir crate && tar xzf "$crate" -C crate
src=$dir/crate/mosaik-0.3.13/src/tee/tdx/builder/mrtd.rs
echo "$mrtd_rs_sha256  $src" | sha256sum -c --quiet
cat >Cargo.toml <<'TOML'
[package]
name = "mosaik-mrtd"
version = "0.1.0"
edition = "2021"
[dependencies]
sha2 = "0.10"
hex = "0.4"
[workspace]
TOML
cat >src/main.rs <<RS
#![allow(dead_code)]
#[path = "$src"]
mod mrtd;
fn main() {
    let path = std::env::args().nth(1).expect("usage: mosaik-mrtd FIRMWARE");
    let fw = std::fs::read(&path).expect("read firmware");
    match mrtd::compute_mrtd(&fw) {
        Ok(m) => println!("{}", hex::encode(m)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}
RS
cargo build --release --quiet
echo "$dir/target/release/mosaik-mrtd"
