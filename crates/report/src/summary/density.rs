//! Density: how many instances fit, and what each more one costs.

use super::*;

/// One backend's density ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct DensitySeries {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Its steps, by number of instances.
    pub steps: Vec<DensityStep>,
    /// What each additional instance added to the instances' cgroup charges, bytes: one value
    /// per step, `Δinstance_bytes / Δn`, summarised.
    pub per_instance: Option<Summary>,
    /// What each additional instance took from the host's MemAvailable, bytes, the same way.
    pub per_instance_host: Option<Summary>,
    /// Instances started per second in each step, summarised.
    pub launch_rate: Option<Summary>,
    /// How the ladder ended.
    pub end: Option<DensityEnd>,
    /// On the lab's image: what each additional instance added to the host's memory, the
    /// image's page cache counted once (`host_bytes`), bytes, step by step, summarised.
    pub per_instance_on_image: Option<Summary>,
}

impl DensitySeries {
    /// On the lab's image: the first instance's start with the image out of the page cache.
    pub fn cold_start_ns(&self) -> Option<u64> {
        self.steps.iter().find_map(|s| s.image.cold_start_ns)
    }

    /// On the lab's image: the later steps' median starts, warm, summarised.
    pub fn warm_start(&self) -> Option<Summary> {
        let warm: Vec<f64> = self
            .steps
            .iter()
            .filter(|s| s.image.cold_start_ns.is_none())
            .filter_map(|s| s.image.start_ns)
            .map(|n| n as f64)
            .collect();
        Summary::of(&warm)
    }

    /// The step with the most instances alive.
    pub fn top(&self) -> Option<&DensityStep> {
        self.steps.iter().max_by_key(|s| s.n)
    }
}

impl DensitySeries {
    /// How many instances of this backend would fit in `memory_bytes`, at the median
    /// per-instance charge (a projection, not a measurement: the ladder may have stopped early).
    pub fn projected_fit(&self, memory_bytes: u64) -> Option<f64> {
        let per = self.per_instance?.median;
        (per > 0.0).then(|| memory_bytes as f64 / per)
    }

    /// The largest number of instances that were alive at once.
    pub fn max_n(&self) -> u32 {
        self.steps.iter().map(|s| s.n).max().unwrap_or(0)
    }
}

/// Density figures of every backend with density steps, in table order (by family).
pub fn density(results: &Results) -> Vec<DensitySeries> {
    results
        .backend_names()
        .iter()
        .filter(|b| results.density_of(b).next().is_some())
        // A stop request ends the list; what is computed then is discarded.
        .take_while(|_| !isolab_host::interrupt::work_stopped())
        .map(|backend| {
            let mut steps: Vec<DensityStep> = results.density_of(backend).cloned().collect();
            steps.sort_by_key(|s| s.n);
            // Marginal cost: each step against the one before it (the first against nothing
            // alive), so a fixed cost shared by all instances shows only once.
            let (mut per, mut per_host, mut launch) = (Vec::new(), Vec::new(), Vec::new());
            let mut on_image = Vec::new();
            // On the image, the first instance also brings the image's pages into the page
            // cache: what each *more* instance costs starts from the second step.
            let mut prev: (u32, f64, f64, Option<f64>) = (0, 0.0, 0.0, None);
            for s in &steps {
                let dn = s.n.saturating_sub(prev.0);
                let host = s.image.host_bytes.map(|b| b as f64);
                if dn > 0 {
                    per.push((s.instance_bytes as f64 - prev.1) / dn as f64);
                    per_host.push((s.mem_available_drop_bytes as f64 - prev.2) / dn as f64);
                    if let (Some(now), Some(before)) = (host, prev.3) {
                        on_image.push((now - before) / dn as f64);
                    }
                }
                if s.added > 0 && s.launch_ns > 0 {
                    launch.push(s.added as f64 / (s.launch_ns as f64 / 1e9));
                }
                prev = (
                    s.n,
                    s.instance_bytes as f64,
                    s.mem_available_drop_bytes as f64,
                    host,
                );
            }
            DensitySeries {
                label: backends::label(results, backend),
                per_instance: Summary::of(&per),
                per_instance_host: Summary::of(&per_host),
                launch_rate: Summary::of(&launch),
                per_instance_on_image: Summary::of(&on_image),
                end: results.ends_of(backend).next().cloned(),
                steps,
                backend: backend.clone(),
            }
        })
        .collect()
}
