//! The guest kernel's command line: how the lab configures a kernel it did not build, and how it
//! hands the workload its arguments.
//!
//! The command line is a string in guest memory (the boot parameters' `cmd_line_ptr`, or PVH's
//! `cmdline_paddr`). The kernel takes the words it knows (`console=`, `reboot=`, module
//! parameters such as `8250.nr_uarts=`), and everything after a lone `--` it passes untouched
//! to `/init` as its arguments. So one string both tunes the kernel for a microVM and says which
//! workload kernel to run:
//!
//! ```text
//!  console=ttyS0 reboot=k panic=-1 pci=off ... quiet -- kernel=cpu mib=0 iters=20000000 hold=0 seed=… port=1008
//!  └──────────── for the guest kernel ────────────┘    └──────────────── argv of /init ───────────────────┘
//! ```
//!
//! Each word of the kernel's part, and why a microVM wants it:
//!
//! | word | why |
//! |---|---|
//! | `console=ttyS0` | kernel messages and `/dev/console` on the first 16550 UART (I/O port 0x3f8, IRQ 4): the only device the VMM emulates for output |
//! | `reboot=k` / `reboot=t` | how `reboot(2)` resets the machine: through the i8042 keyboard controller (port 0x64, command 0xfe), which the lab's VMM emulates; or with a triple fault, which QEMU with `-no-reboot` turns into an exit |
//! | `panic=-1` | reboot at once on a kernel panic instead of hanging: a dead guest ends the run |
//! | `pci=off` | there is no PCI bus: don't probe its configuration ports (0xcf8/0xcfc) |
//! | `nomodule` | nothing to load modules from: don't try (left out when the initramfs carries the modules of the guest's virtio drivers, which `/init` loads) |
//! | `8250.nr_uarts=1` | probe one UART, not four |
//! | `initcall_blacklist=i8042_init` | do not start the i8042 (PS/2 keyboard and mouse) driver: the lab's i8042 is only a reset line, and the driver would poll it 10 000 times, 50 µs apart, for answers it never gives — half a second of every boot. `reboot=k` writes the reset command itself, without the driver |
//! | `quiet` | print only warnings: every console byte is an `out` to the UART, i.e. a VM exit |
//! | `earlyprintk=serial,ttyS0,115200 loglevel=8` | (verbose) print everything from the first moments of `setup_arch`, by polling the UART |

use isolab_payload::Spec;

/// How `reboot(2)` resets the guest machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reboot {
    /// Pulse the reset line of the i8042 keyboard controller (`reboot=k`).
    Keyboard,
    /// Load an empty IDT and raise an exception: a triple fault (`reboot=t`).
    TripleFault,
}

/// What the guest's command line should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdlineOptions {
    /// How the guest stops.
    pub reboot: Reboot,
    /// Print every kernel message, from the earliest moment (slow; for seeing how far a boot
    /// gets), instead of `quiet`.
    pub verbose: bool,
    /// Ask `/init` to also write its markers to this I/O port (the lab's VMM stamps them).
    pub marker_port: Option<u16>,
    /// More words for the kernel, before `--`.
    pub extra: Vec<String>,
    /// The initramfs carries kernel modules for `/init` to load: leave out `nomodule`.
    pub modules: bool,
    /// More words for `/init`, after the spec (e.g. `disk=/dev/vda net=… peer=…`).
    pub init: Vec<String>,
}

impl Default for CmdlineOptions {
    fn default() -> Self {
        CmdlineOptions {
            reboot: Reboot::Keyboard,
            verbose: false,
            marker_port: None,
            extra: Vec::new(),
            modules: false,
            init: Vec::new(),
        }
    }
}

/// The words for the guest kernel, before `--`.
pub fn kernel_words(opts: &CmdlineOptions) -> Vec<String> {
    let mut words: Vec<String> = [
        "console=ttyS0",
        match opts.reboot {
            Reboot::Keyboard => "reboot=k",
            Reboot::TripleFault => "reboot=t",
        },
        "panic=-1",
        "pci=off",
        "nomodule",
        "8250.nr_uarts=1",
        "initcall_blacklist=i8042_init",
    ]
    .iter()
    // `nomodule` sets the kernel's `modules_disabled`: finit_module would fail with EPERM.
    .filter(|w| !(opts.modules && **w == "nomodule"))
    .map(|w| w.to_string())
    .collect();
    if opts.verbose {
        words.push("earlyprintk=serial,ttyS0,115200".into());
        words.push("loglevel=8".into());
    } else {
        words.push("quiet".into());
    }
    words.extend(opts.extra.iter().cloned());
    words
}

/// The words for `/init`, after `--`: the spec, and the marker port if any.
pub fn init_words(spec: &Spec, opts: &CmdlineOptions) -> Vec<String> {
    let mut words: Vec<String> = spec.to_string().split(' ').map(str::to_string).collect();
    if let Some(port) = opts.marker_port {
        words.push(format!("port={port}"));
    }
    words.extend(opts.init.iter().cloned());
    words
}

/// The whole command line.
pub fn render(spec: &Spec, opts: &CmdlineOptions) -> String {
    let mut words = kernel_words(opts);
    words.push("--".into());
    words.extend(init_words(spec, opts));
    words.join(" ")
}

/// The longest command line an x86 kernel accepts (`COMMAND_LINE_SIZE`), NUL included.
pub const MAX_LEN: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_payload::Kernel;

    #[test]
    fn the_spec_travels_after_the_double_dash() {
        let spec = Spec::new(Kernel::Cpu, 0, 1234);
        let opts = CmdlineOptions {
            marker_port: Some(0x3f0),
            ..Default::default()
        };
        let line = render(&spec, &opts);
        let (kernel, init) = line.split_once(" -- ").unwrap();
        assert!(kernel.starts_with("console=ttyS0 reboot=k panic=-1"));
        assert!(kernel.ends_with(" quiet"));
        assert!(
            !kernel.contains("kernel="),
            "nothing of the spec reaches the kernel"
        );
        // What /init gets parses back to the same spec, once its own option is taken out.
        let words: Vec<&str> = init.split(' ').collect();
        assert_eq!(words.last(), Some(&"port=1008"));
        let parsed = Spec::parse(words[..words.len() - 1].iter().map(|w| w.as_bytes())).unwrap();
        assert_eq!(parsed, spec);
        assert!(line.len() < MAX_LEN);
    }

    #[test]
    fn verbose_and_triple_fault_change_only_their_words() {
        let spec = Spec::default_for(Kernel::Ready);
        let quiet = render(&spec, &CmdlineOptions::default());
        let loud = render(
            &spec,
            &CmdlineOptions {
                verbose: true,
                reboot: Reboot::TripleFault,
                extra: vec!["foo=bar".into()],
                ..Default::default()
            },
        );
        assert!(quiet.contains(" quiet ") && !quiet.contains("earlyprintk"));
        assert!(loud.contains("earlyprintk=serial,ttyS0,115200 loglevel=8 foo=bar -- "));
        assert!(loud.contains("reboot=t") && !loud.contains("reboot=k"));
        assert!(!loud.contains("port="), "no marker port unless asked");
    }

    #[test]
    fn a_guest_with_modules_may_load_them_and_its_devices_words_reach_init() {
        let spec = Spec::default_for(Kernel::Probe);
        let opts = CmdlineOptions {
            modules: true,
            init: vec!["disk=/dev/vda".into()],
            ..Default::default()
        };
        let line = render(&spec, &opts);
        assert!(!line.contains("nomodule"), "{line}");
        assert!(line.ends_with(" disk=/dev/vda"), "{line}");
        assert!(render(&spec, &CmdlineOptions::default()).contains(" nomodule "));
    }
}
