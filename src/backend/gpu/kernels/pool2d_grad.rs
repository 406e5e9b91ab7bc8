//! Input gradients of 2-D pooling on the GPU: max and average pooling through
//! `shaders/pool2d_grad.wgsl` (a gather: one invocation per input cell sums the windows that
//! route gradient to it, no atomics, bit-identical run to run), global average pooling as a
//! scaled broadcast (`broadcast_to`). Semantics and parameter checks are the reference's.

use super::GpuElement;
use super::broadcast_grad::{self, BroadcastTo};
use super::elementwise_grad::check_lens;
use super::pool2d::{Knobs, Pool, Pool2d};
use super::unary::{check_buffer, grid, output, read, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use spore_kernels_cpu::reference::global_avg_pool::GlobalAvgPoolParams;

/// Legal knob sets (`WG` override), shared with the forward pooling.
pub const CANDIDATES: &[Knobs] = super::pool2d::CANDIDATES;

/// Records `dx` (shaped like the forward input) from `dy` for max or average pooling. `x` is
/// the forward input (read by max pooling to find each window's winner; average pooling
/// ignores it and may be given `None`).
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: Option<&wgpu::Buffer>,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &Pool2d,
) -> Result<()> {
    let (params, x_len, y_len) = p.params()?;
    let x = match (p.pool, x) {
        (Pool::Max(_), Some(x)) => {
            check_buffer::<T>("x", x, x_len)?;
            x
        }
        (Pool::Max(_), None) => {
            return Err(crate::error::Error::invalid_param(
                "x",
                "max pooling's gradient needs the forward input",
            ));
        }
        // Bound but unread: the shader's layout has the binding either way.
        (Pool::Avg(_), _) => dy,
    };
    check_buffer::<T>("dy", dy, y_len)?;
    check_buffer::<T>("dx", dx, x_len)?;
    let pipeline = gpu.pipeline("pool2d_grad", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("pool2d_grad_params", &params)?;
    let threads = super::unary::to_u32("x elements", x_len)?;
    rec.dispatch(&pipeline, &[x, dy, dx, &pb], grid(gpu, threads, p.knobs.wg))
}

/// Uploads `x` (max pooling; ignored for average) and `dy`, runs [`record`], reads `dx` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], dy: &[T], p: &Pool2d) -> Result<Vec<T>> {
    let (_, x_len, y_len) = p.params()?;
    check_lens("pool2d_grad", &[("dy", dy.len())], y_len)?;
    let xb = match p.pool {
        Pool::Max(_) => {
            check_lens("pool2d_grad", &[("x", x.len())], x_len)?;
            Some(upload(gpu, "x", x)?)
        }
        Pool::Avg(_) => None,
    };
    let dyb = upload(gpu, "dy", dy)?;
    let dxb = output::<T>(gpu, "dx", x_len)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, xb.as_ref(), &dyb, &dxb, p)?;
    rec.submit()?;
    read::<T>(gpu, &dxb, x_len)
}

/// The global average pooling gradient `dx[n, i, j, c] = dy[n, c] / (h * w)` as a broadcast.
pub fn global_avg_broadcast(
    p: GlobalAvgPoolParams,
    knobs: broadcast_grad::Knobs,
) -> Result<BroadcastTo> {
    p.validate()?;
    Ok(BroadcastTo {
        x_shape: vec![p.n, 1, 1, p.c],
        shape: vec![p.n, p.h, p.w, p.c],
        scale: 1.0 / (p.h * p.w) as f64,
        knobs,
    })
}

/// Records the global average pooling gradient: `dy` `[n, c]` into `dx` `[n, h, w, c]`.
pub fn record_global<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: GlobalAvgPoolParams,
    knobs: broadcast_grad::Knobs,
) -> Result<()> {
    let b = global_avg_broadcast(p, knobs)?;
    broadcast_grad::record_broadcast_to::<T>(gpu, rec, dy, dx, &b)
}

/// Uploads `dy`, runs [`record_global`], reads `dx` back.
pub fn run_global<T: GpuElement>(
    gpu: &GpuContext,
    dy: &[T],
    p: GlobalAvgPoolParams,
    knobs: broadcast_grad::Knobs,
) -> Result<Vec<T>> {
    broadcast_grad::run_broadcast_to(gpu, dy, &global_avg_broadcast(p, knobs)?)
}
