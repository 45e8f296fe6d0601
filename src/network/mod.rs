//! Networks for instances: the kernel objects through which a guest's or a container's packets
//! reach the host's network stack. [`tap`] is the one a VMM uses: a virtual Ethernet interface in
//! the host's kernel whose other end is a file descriptor, so every frame the guest's virtio-net
//! device sends is a `write` the VMM makes, and every frame the host sends to the interface is a
//! `read` — the guest's "wire" is a file. Each module here is self-contained and creates its
//! object in the network namespace of the calling thread, so a lab that works in a namespace of
//! its own never touches the host's interfaces.

pub mod tap;
