/work/wt/ws/crates/guest/target/debug/deps/isolab_guest-f74358b4ca03e9c4.d: src/main.rs src/hypercall.rs src/mem.rs src/shim.rs Cargo.toml

/work/wt/ws/crates/guest/target/debug/deps/libisolab_guest-f74358b4ca03e9c4.rmeta: src/main.rs src/hypercall.rs src/mem.rs src/shim.rs Cargo.toml

src/main.rs:
src/hypercall.rs:
src/mem.rs:
src/shim.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
