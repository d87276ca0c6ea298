//! What a job costs: CPU measured on its decode passes' threads (see `media::cpu`), its wall
//! time, the memory guard's estimate of its largest pass, and a price for them.

use serde::{Deserialize, Serialize};

use super::status::JobStatus;
use crate::config::TranscodeSettings;

const MIB: f64 = 1024.0 * 1024.0;

/// status.json's `cost`: this run of the job (a resumed job counts only what it encoded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// CPU seconds its decode passes used, libav's and libx264's threads included.
    pub cpu_seconds: f64,
    /// Seconds from the start of processing to now, or to its end.
    pub wall_seconds: f64,
    /// The memory guard's estimate for the job's largest decode pass, in MiB.
    #[serde(rename = "peakMemoryMiB")]
    pub peak_memory_mib: f64,
    /// `cpuSeconds` × the vCPU-second price + `peakMemoryMiB` in GiB × `wallSeconds` × the
    /// GiB-second price.
    pub estimated_usd: f64,
}

/// USD per unit of what a job uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prices {
    pub vcpu_second: f64,
    pub gib_second: f64,
}

impl Prices {
    pub fn from_settings(settings: &TranscodeSettings) -> Self {
        Self {
            vcpu_second: settings.price_vcpu_second,
            gib_second: settings.price_gib_second,
        }
    }
}

impl Cost {
    /// Adds one decode pass: its measured CPU seconds and the memory guard's estimate for it.
    pub fn add_pass(&mut self, cpu_seconds: f64, memory_bytes: u64, prices: Prices) {
        self.cpu_seconds = round(self.cpu_seconds + cpu_seconds, 3);
        self.peak_memory_mib = self
            .peak_memory_mib
            .max((memory_bytes as f64 / MIB).round());
        self.price(prices);
    }

    /// Sets the wall time so far and prices the whole again.
    pub fn set_wall(&mut self, wall_seconds: f64, prices: Prices) {
        self.wall_seconds = round(wall_seconds, 3);
        self.price(prices);
    }

    /// CPU is charged as used (the instance runs other jobs meanwhile); memory is charged for
    /// the job's peak over its whole wall time, since the guard holds it back for the job.
    fn price(&mut self, prices: Prices) {
        let cpu = self.cpu_seconds * prices.vcpu_second;
        let memory = self.peak_memory_mib / 1024.0 * self.wall_seconds * prices.gib_second;
        self.estimated_usd = round(cpu + memory, 9);
    }
}

/// Adds a finished decode pass to `status`'s cost and brings its wall time up to date.
pub fn record_pass(status: &mut JobStatus, cpu_seconds: f64, memory_bytes: u64, prices: Prices) {
    status
        .cost
        .get_or_insert_default()
        .add_pass(cpu_seconds, memory_bytes, prices);
    record_wall(status, prices);
}

/// Sets `status`'s wall time: from the start of processing to its end, or to now.
pub fn record_wall(status: &mut JobStatus, prices: Prices) {
    let Some(started) = status.timestamps.started else {
        return;
    };
    let end = status.timestamps.finished.unwrap_or_else(chrono::Utc::now);
    let wall = (end - started).num_milliseconds().max(0) as f64 / 1000.0;
    status.cost.get_or_insert_default().set_wall(wall, prices);
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimated_usd_charges_cpu_used_and_peak_memory_over_wall_time() {
        let cloud_run = Prices::from_settings(&TranscodeSettings::default());
        assert_eq!(cloud_run.vcpu_second, 0.000018);
        assert_eq!(cloud_run.gib_second, 0.000002);
        let mut cost = Cost::default();
        // Two passes: 30 + 10 CPU seconds; 512 MiB and 1 GiB estimates.
        cost.add_pass(30.0, 512 << 20, cloud_run);
        cost.add_pass(10.0, 1 << 30, cloud_run);
        cost.set_wall(25.0, cloud_run);
        assert_eq!(cost.cpu_seconds, 40.0);
        assert_eq!(cost.peak_memory_mib, 1024.0);
        // 40 × 0.000018 + 1 GiB × 25 s × 0.000002 = 0.00072 + 0.00005.
        assert_eq!(cost.estimated_usd, 0.00077);
        let prices = Prices {
            vcpu_second: 0.001,
            gib_second: 0.01,
        };
        cost.set_wall(100.0, prices);
        assert_eq!(cost.estimated_usd, 0.04 + 1.0);
        let json = serde_json::to_value(&cost).unwrap();
        for field in ["cpuSeconds", "wallSeconds", "peakMemoryMiB", "estimatedUsd"] {
            assert!(json.get(field).is_some(), "{json}");
        }
    }
}
