//! `spore devices`: every adapter wgpu sees and the CPU, as a human-readable report.

use spore::backend::gpu::{AdapterSummary, list_adapters};
use spore::kernels_cpu::cpu::{CpuInfo, cpu_info};
use std::fmt::Write;

/// The report for this machine.
pub fn render() -> String {
    render_with(&list_adapters(), &cpu_info()) + &render_kernels()
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The report for the given adapters and CPU.
pub fn render_with(adapters: &[AdapterSummary], cpu: &CpuInfo) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "GPU adapters: {} (open one by its [index]: GpuOptions::adapter_index)",
        adapters.len()
    );
    if adapters.is_empty() {
        let _ = writeln!(
            s,
            "  (none: install a Vulkan/Metal/DX12 driver; on Debian `apt-get install mesa-vulkan-drivers` gives a software one)"
        );
    }
    for (i, a) in adapters.iter().enumerate() {
        let soft = if a.is_software {
            "  [software: used only when asked for]"
        } else {
            ""
        };
        // The bracketed number is what `GpuOptions::adapter_index` takes.
        let _ = writeln!(s, "  [{i}] {}{soft}", a.name);
        let _ = writeln!(
            s,
            "      backend {}, type {}, driver {}",
            a.backend, a.device_type, a.driver
        );
        let _ = writeln!(
            s,
            "      f16 {}, timestamp queries {}, subgroups {} (size {}..{})",
            yes(a.shader_f16),
            yes(a.timestamp_query),
            yes(a.subgroups),
            a.subgroup_size.0,
            a.subgroup_size.1
        );
        let _ = writeln!(
            s,
            "      max buffer {}, max storage binding {}, storage buffers/stage {}",
            mib(a.max_buffer_size),
            mib(a.max_storage_buffer_binding_size),
            a.max_storage_buffers_per_shader_stage
        );
        let _ = writeln!(
            s,
            "      invocations/workgroup {}, workgroup memory {} KiB, workgroups/dim {}",
            a.max_compute_invocations_per_workgroup,
            a.max_compute_workgroup_storage_size / 1024,
            a.max_compute_workgroups_per_dimension
        );
    }
    let _ = writeln!(s, "CPU: {} ({})", cpu.name, cpu.arch);
    let _ = writeln!(
        s,
        "  threads {}, features {}",
        cpu.threads,
        cpu.features.join(" ")
    );
    s
}

/// Which implementation each CPU kernel slot uses (after `SPORE_CPU_KERNELS` and detection).
pub fn render_kernels() -> String {
    let k = spore::kernels_cpu::dispatch::kernels();
    let slots: Vec<String> = k
        .describe()
        .iter()
        .map(|(slot, imp)| format!("{slot}={imp}"))
        .collect();
    format!("  CPU kernels ({:?} tier): {}\n", k.tier, slots.join(", "))
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_everything() {
        let a = AdapterSummary {
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
            vendor: 0x10005,
            device: 0,
            driver: "llvmpipe Mesa 22.3.6".into(),
            shader_f16: true,
            timestamp_query: true,
            is_software: true,
            max_buffer_size: 2 << 30,
            max_storage_buffer_binding_size: 128 << 20,
            max_storage_buffers_per_shader_stage: 8,
            max_compute_invocations_per_workgroup: 256,
            max_compute_workgroup_storage_size: 32768,
            max_compute_workgroups_per_dimension: 65535,
            subgroup_size: (8, 8),
            subgroups: true,
        };
        let cpu = CpuInfo {
            name: "Zen".into(),
            threads: 2,
            arch: "x86_64",
            features: vec!["avx2", "fma"],
        };
        let r = render_with(&[a], &cpu);
        for needle in [
            "llvmpipe",
            "Vulkan",
            "software",
            "f16 yes",
            "timestamp queries yes",
            "subgroups yes",
            "[0] llvmpipe",
            "32 KiB",
            "threads 2",
            "avx2 fma",
        ] {
            assert!(r.contains(needle), "missing `{needle}` in\n{r}");
        }
        assert!(render_with(&[], &cpu).contains("none"));
    }
}
