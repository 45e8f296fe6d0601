/work/wt/ws/crates/guest/target/debug/deps/isolab_kernels-96a7f9e9f9a13f10.d: /work/wt/ws/crates/kernels/src/lib.rs /work/wt/ws/crates/kernels/src/common.rs /work/wt/ws/crates/kernels/src/compute.rs /work/wt/ws/crates/kernels/src/disk.rs /work/wt/ws/crates/kernels/src/hypercall.rs /work/wt/ws/crates/kernels/src/marker.rs /work/wt/ws/crates/kernels/src/net.rs /work/wt/ws/crates/kernels/src/rng.rs /work/wt/ws/crates/kernels/src/run.rs /work/wt/ws/crates/kernels/src/spec.rs /work/wt/ws/crates/kernels/src/sum.rs /work/wt/ws/crates/kernels/src/wire.rs

/work/wt/ws/crates/guest/target/debug/deps/libisolab_kernels-96a7f9e9f9a13f10.rmeta: /work/wt/ws/crates/kernels/src/lib.rs /work/wt/ws/crates/kernels/src/common.rs /work/wt/ws/crates/kernels/src/compute.rs /work/wt/ws/crates/kernels/src/disk.rs /work/wt/ws/crates/kernels/src/hypercall.rs /work/wt/ws/crates/kernels/src/marker.rs /work/wt/ws/crates/kernels/src/net.rs /work/wt/ws/crates/kernels/src/rng.rs /work/wt/ws/crates/kernels/src/run.rs /work/wt/ws/crates/kernels/src/spec.rs /work/wt/ws/crates/kernels/src/sum.rs /work/wt/ws/crates/kernels/src/wire.rs

/work/wt/ws/crates/kernels/src/lib.rs:
/work/wt/ws/crates/kernels/src/common.rs:
/work/wt/ws/crates/kernels/src/compute.rs:
/work/wt/ws/crates/kernels/src/disk.rs:
/work/wt/ws/crates/kernels/src/hypercall.rs:
/work/wt/ws/crates/kernels/src/marker.rs:
/work/wt/ws/crates/kernels/src/net.rs:
/work/wt/ws/crates/kernels/src/rng.rs:
/work/wt/ws/crates/kernels/src/run.rs:
/work/wt/ws/crates/kernels/src/spec.rs:
/work/wt/ws/crates/kernels/src/sum.rs:
/work/wt/ws/crates/kernels/src/wire.rs:
