/work/main/crates/guest/target/debug/deps/isolab_kernels-b8f590ec4138fedf.d: /work/main/crates/kernels/src/lib.rs /work/main/crates/kernels/src/common.rs /work/main/crates/kernels/src/compute.rs /work/main/crates/kernels/src/disk.rs /work/main/crates/kernels/src/hypercall.rs /work/main/crates/kernels/src/marker.rs /work/main/crates/kernels/src/net.rs /work/main/crates/kernels/src/rng.rs /work/main/crates/kernels/src/run.rs /work/main/crates/kernels/src/spec.rs /work/main/crates/kernels/src/sum.rs /work/main/crates/kernels/src/wire.rs

/work/main/crates/guest/target/debug/deps/libisolab_kernels-b8f590ec4138fedf.rmeta: /work/main/crates/kernels/src/lib.rs /work/main/crates/kernels/src/common.rs /work/main/crates/kernels/src/compute.rs /work/main/crates/kernels/src/disk.rs /work/main/crates/kernels/src/hypercall.rs /work/main/crates/kernels/src/marker.rs /work/main/crates/kernels/src/net.rs /work/main/crates/kernels/src/rng.rs /work/main/crates/kernels/src/run.rs /work/main/crates/kernels/src/spec.rs /work/main/crates/kernels/src/sum.rs /work/main/crates/kernels/src/wire.rs

/work/main/crates/kernels/src/lib.rs:
/work/main/crates/kernels/src/common.rs:
/work/main/crates/kernels/src/compute.rs:
/work/main/crates/kernels/src/disk.rs:
/work/main/crates/kernels/src/hypercall.rs:
/work/main/crates/kernels/src/marker.rs:
/work/main/crates/kernels/src/net.rs:
/work/main/crates/kernels/src/rng.rs:
/work/main/crates/kernels/src/run.rs:
/work/main/crates/kernels/src/spec.rs:
/work/main/crates/kernels/src/sum.rs:
/work/main/crates/kernels/src/wire.rs:
