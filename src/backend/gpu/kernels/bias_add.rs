//! bias_add on the GPU (`shaders/bias_add.wgsl`): `y = x + bias[c]` over the channel axis.
//! Also the smoke test every adapter runs first.

use super::GpuElement;
use super::unary::check_buffer;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// rows * channels.
    pub total: u32,
    /// Channels (length of the bias).
    pub channels: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Invocations per workgroup.
const WG: u32 = 256;

/// Workgroup grid covering `n` invocations, folded into two dimensions past the limit.
pub(crate) fn grid_1d(n: u32, wg: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1);
    if groups <= max_per_dim {
        [groups, 1, 1]
    } else {
        let x = max_per_dim;
        [x, groups.div_ceil(x), 1]
    }
}

/// Records `y = x + bias` (x: `total` elements, bias: `channels`) on buffers already on the
/// GPU.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    y: &wgpu::Buffer,
    total: usize,
    channels: usize,
) -> Result<()> {
    if channels == 0 || !total.is_multiple_of(channels) {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![total], vec![channels]],
            reason: "bias_add: x length must be a non-zero multiple of the bias length".into(),
        });
    }
    check_buffer::<T>("x", x, total)?;
    check_buffer::<T>("bias", bias, channels)?;
    check_buffer::<T>("y", y, total)?;
    let total32 =
        u32::try_from(total).map_err(|_| Error::invalid_param("x", "more than 2^32 elements"))?;
    let params = Params {
        total: total32,
        channels: channels as u32,
        _pad: [0; 2],
    };
    let pipeline = gpu.pipeline("bias_add", T::WGSL, &[("WG", f64::from(WG))])?;
    let pb = gpu.uniform("params", &params)?;
    let grid = grid_1d(
        total32,
        WG,
        gpu.adapter().max_compute_workgroups_per_dimension,
    );
    rec.dispatch(&pipeline, &[x, bias, y, &pb], grid)
}

/// Runs bias_add on the GPU (f32, or f16 where the device has `SHADER_F16`): uploads,
/// records [`record`], reads back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], bias: &[T]) -> Result<Vec<T>> {
    let channels = bias.len();
    if channels == 0 || !x.len().is_multiple_of(channels) {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![channels]],
            reason: "bias_add: x length must be a non-zero multiple of the bias length".into(),
        });
    }
    let xb = gpu.upload("x", bytemuck::cast_slice(x))?;
    let bb = gpu.upload("bias", bytemuck::cast_slice(bias))?;
    let bytes = std::mem::size_of_val(x) as u64;
    let yb = gpu.poisoned("y", bytes)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &bb, &yb, x.len(), channels)?;
    rec.submit()?;
    let out = gpu.read_back(&yb, bytes)?;
    Ok(bytemuck::pod_collect_to_vec(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_folds_past_the_limit() {
        assert_eq!(grid_1d(1, 256, 65535), [1, 1, 1]);
        assert_eq!(grid_1d(0, 256, 65535), [1, 1, 1]);
        assert_eq!(grid_1d(257, 256, 65535), [2, 1, 1]);
        let g = grid_1d(u32::MAX, 64, 65535);
        assert!(u64::from(g[0]) * u64::from(g[1]) * 64 >= u64::from(u32::MAX));
        assert!(g[0] <= 65535 && g[1] <= 65535);
    }
}
