/work/main/crates/guest/target/debug/deps/isolab_guest-6816bdb01406fe22.d: src/main.rs src/hypercall.rs src/mem.rs src/shim.rs Cargo.toml

/work/main/crates/guest/target/debug/deps/libisolab_guest-6816bdb01406fe22.rmeta: src/main.rs src/hypercall.rs src/mem.rs src/shim.rs Cargo.toml

src/main.rs:
src/hypercall.rs:
src/mem.rs:
src/shim.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
