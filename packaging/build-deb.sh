#!/usr/bin/env bash
# Builds the Debian package: target/debian/podstore_<version>_amd64.deb.
#   packaging/build-deb.sh      (needs cargo-deb: cargo install cargo-deb --locked)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo build --release --locked -q -p podstore-net -p podstore-tuning
rm -rf target/debian
cargo deb -p podstore-net --no-build -o target/debian/ >/dev/null
ls target/debian/*.deb
