//! Optimizer updates on the GPU, one pass each: SGD with optional momentum, dampening,
//! Nesterov and weight decay (`shaders/sgd_update.wgsl`) and Adam / AdamW with bias
//! correction (`shaders/adam_update.wgsl`), PyTorch semantics as the `sgd_update` /
//! `adam_update` ops define them. The learning rate and the 0-based step count are read
//! from their 1-element GPU buffers, so they change between steps without re-recording
//! anything; new parameters and state go to separate output buffers.

use super::GpuElement;
use super::elementwise_grad::check_lens;
use super::unary::{Knobs, check_buffer, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of `sgd_update.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SgdParams {
    /// Element count.
    pub total: u32,
    /// 1 when a momentum buffer is read and written.
    pub has_buf: u32,
    /// 1 for Nesterov momentum.
    pub nesterov: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad0: u32,
    /// Momentum factor.
    pub momentum: f32,
    /// `1 - dampening`.
    pub one_minus_dampening: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad1: u32,
}

/// Mirror of `adam_update.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamParams {
    /// Element count.
    pub total: u32,
    /// 1 for AdamW (decoupled weight decay).
    pub decoupled: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad0: [u32; 2],
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// `ln(beta1)` (clamped to -100 so beta1 = 0 stays finite).
    pub ln_beta1: f32,
    /// `ln(beta2)` (clamped likewise).
    pub ln_beta2: f32,
    /// Added to the bias-corrected `sqrt(v)`.
    pub eps: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad1: [u32; 2],
}

/// Legal `(WG, EPT)` knob sets for the autotuner (both updates).
pub const CANDIDATES: &[Knobs] = &[
    Knobs { wg: 256, ept: 1 },
    Knobs { wg: 64, ept: 2 },
    Knobs { wg: 128, ept: 4 },
];

/// One SGD update (see `ops::sgd_update`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Element count of the parameter.
    pub len: usize,
    /// Momentum factor (0 = plain SGD, no buffer).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Tuning knobs.
    pub knobs: Knobs,
}

fn finite_f32(name: &str, v: f64) -> Result<f32> {
    let f = v as f32;
    if !(f.is_finite() && v >= 0.0) {
        return Err(Error::invalid_param(
            name,
            format!("must be finite in f32 and >= 0, got {v}"),
        ));
    }
    Ok(f)
}

impl Sgd {
    fn params(&self) -> Result<SgdParams> {
        self.knobs.validate()?;
        let total = to_u32("len", self.len)?;
        if total == 0 {
            return Err(Error::invalid_param("len", "must be positive"));
        }
        let momentum = finite_f32("momentum", self.momentum)?;
        let dampening = finite_f32("dampening", self.dampening)?;
        let one_minus_dampening = 1.0 - dampening;
        let weight_decay = finite_f32("weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid_param(
                "nesterov",
                "Nesterov momentum needs momentum > 0 and dampening 0",
            ));
        }
        Ok(SgdParams {
            total,
            has_buf: u32::from(self.momentum != 0.0),
            nesterov: u32::from(self.nesterov),
            _pad0: 0,
            momentum,
            one_minus_dampening,
            weight_decay,
            _pad1: 0,
        })
    }

    /// Whether the update reads and writes a momentum buffer.
    pub fn has_buffer(&self) -> bool {
        self.momentum != 0.0
    }
}

/// The 1-element scalar inputs of an update.
#[derive(Debug, Clone, Copy)]
pub struct Scalars<'a> {
    /// Learning rate, 1 f32.
    pub lr: &'a wgpu::Buffer,
    /// 0-based step count, 1 i32.
    pub step: &'a wgpu::Buffer,
}

fn check_scalars(s: Scalars<'_>) -> Result<()> {
    for (name, b) in [("lr", s.lr), ("step", s.step)] {
        if b.size() < 4 {
            return Err(Error::invalid_param(name, "needs a 4-byte scalar buffer"));
        }
    }
    Ok(())
}

/// Records one SGD step: `new_p` (and `new_buf` with momentum) from `p`, `g`, the scalars and
/// `buf` (with momentum). `buf` / `new_buf` must be `Some` exactly when momentum is non-zero.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record_sgd<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    p: &wgpu::Buffer,
    g: &wgpu::Buffer,
    scalars: Scalars<'_>,
    buf: Option<&wgpu::Buffer>,
    new_p: &wgpu::Buffer,
    new_buf: Option<&wgpu::Buffer>,
    s: &Sgd,
) -> Result<()> {
    let params = s.params()?;
    check_scalars(scalars)?;
    for (name, b) in [("p", p), ("g", g), ("new_p", new_p)] {
        check_buffer::<T>(name, b, s.len)?;
    }
    // Plain SGD binds g as the (unread) buffer and a 4-byte scratch as the (unwritten) new
    // buffer: the shader's layout has the bindings either way.
    let scratch;
    let (buf, new_buf) = match (s.has_buffer(), buf, new_buf) {
        (true, Some(b), Some(nb)) => {
            check_buffer::<T>("buf", b, s.len)?;
            check_buffer::<T>("new_buf", nb, s.len)?;
            (b, nb)
        }
        (false, None, None) => {
            scratch = gpu.poisoned("sgd_unused", 4)?;
            (g, &scratch)
        }
        _ => {
            return Err(Error::invalid_param(
                "buf",
                "the momentum buffers must be given exactly when momentum is non-zero",
            ));
        }
    };
    let pipeline = gpu.pipeline(
        "sgd_update",
        T::WGSL,
        &[
            ("WG", f64::from(s.knobs.wg)),
            ("EPT", f64::from(s.knobs.ept)),
        ],
    )?;
    let pb = gpu.uniform("sgd_update_params", &params)?;
    let threads = params.total.div_ceil(s.knobs.ept);
    rec.dispatch(
        &pipeline,
        &[p, g, scalars.lr, scalars.step, buf, new_p, new_buf, &pb],
        grid(gpu, threads, s.knobs.wg),
    )
}

/// Uploads the inputs, runs [`record_sgd`], reads `(new_p, new_buf)` back (`new_buf` empty
/// without momentum).
pub fn run_sgd<T: GpuElement>(
    gpu: &GpuContext,
    p: &[T],
    g: &[T],
    lr: f32,
    step: i32,
    buf: Option<&[T]>,
    s: &Sgd,
) -> Result<(Vec<T>, Vec<T>)> {
    check_lens("sgd_update", &[("p", p.len()), ("g", g.len())], s.len)?;
    let pb = upload(gpu, "p", p)?;
    let gb = upload(gpu, "g", g)?;
    let lrb = gpu.upload("lr", bytemuck::bytes_of(&lr))?;
    let stb = gpu.upload("step", bytemuck::bytes_of(&step))?;
    let bufb = match buf {
        Some(b) => {
            check_lens("sgd_update", &[("buf", b.len())], s.len)?;
            Some(upload(gpu, "buf", b)?)
        }
        None => None,
    };
    let npb = output::<T>(gpu, "new_p", s.len)?;
    let nbb = bufb
        .as_ref()
        .map(|_| output::<T>(gpu, "new_buf", s.len))
        .transpose()?;
    let scalars = Scalars {
        lr: &lrb,
        step: &stb,
    };
    let mut rec = gpu.recorder();
    record_sgd::<T>(
        gpu,
        &mut rec,
        &pb,
        &gb,
        scalars,
        bufb.as_ref(),
        &npb,
        nbb.as_ref(),
        s,
    )?;
    rec.submit()?;
    let new_buf = match &nbb {
        Some(b) => read::<T>(gpu, b, s.len)?,
        None => Vec::new(),
    };
    Ok((read::<T>(gpu, &npb, s.len)?, new_buf))
}

/// One Adam / AdamW update (see `ops::adam_update`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Element count of the parameter.
    pub len: usize,
    /// First-moment decay, in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment decay, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)` (> 0).
    pub eps: f64,
    /// Weight decay (L2, or decoupled with `decoupled`).
    pub weight_decay: f64,
    /// AdamW.
    pub decoupled: bool,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Adam {
    fn params(&self) -> Result<AdamParams> {
        self.knobs.validate()?;
        let total = to_u32("len", self.len)?;
        if total == 0 {
            return Err(Error::invalid_param("len", "must be positive"));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid_param(
                    name,
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        let eps = finite_f32("eps", self.eps)?;
        if eps <= 0.0 {
            return Err(Error::invalid_param("eps", "must be positive in f32"));
        }
        // ln(0) = -inf: clamp, so exp(t * ln b) underflows to 0 as b^t does.
        let ln = |b: f64| b.ln().max(-100.0) as f32;
        Ok(AdamParams {
            total,
            decoupled: u32::from(self.decoupled),
            _pad0: [0; 2],
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            ln_beta1: ln(self.beta1),
            ln_beta2: ln(self.beta2),
            eps,
            weight_decay: finite_f32("weight_decay", self.weight_decay)?,
            _pad1: [0; 2],
        })
    }
}

/// The Adam state buffers, read (`m`, `v`) or written (`new_m`, `new_v`).
#[derive(Debug, Clone, Copy)]
pub struct Moments<'a> {
    /// First moment.
    pub m: &'a wgpu::Buffer,
    /// Second moment.
    pub v: &'a wgpu::Buffer,
}

/// Records one Adam step. The scalars are first copied into one 8-byte buffer (so the
/// shader stays within 8 storage bindings); the scalar buffers need `COPY_SRC` usage.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record_adam<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    p: &wgpu::Buffer,
    g: &wgpu::Buffer,
    state: Moments<'_>,
    scalars: Scalars<'_>,
    new_p: &wgpu::Buffer,
    new_state: Moments<'_>,
    a: &Adam,
) -> Result<()> {
    let params = a.params()?;
    check_scalars(scalars)?;
    for (name, b) in [
        ("p", p),
        ("g", g),
        ("m", state.m),
        ("v", state.v),
        ("new_p", new_p),
        ("new_m", new_state.m),
        ("new_v", new_state.v),
    ] {
        check_buffer::<T>(name, b, a.len)?;
    }
    let packed = gpu.poisoned("adam_scalars", 8)?;
    rec.copy(scalars.lr, 0, &packed, 0, 4)?;
    rec.copy(scalars.step, 0, &packed, 4, 4)?;
    let pipeline = gpu.pipeline(
        "adam_update",
        T::WGSL,
        &[
            ("WG", f64::from(a.knobs.wg)),
            ("EPT", f64::from(a.knobs.ept)),
        ],
    )?;
    let pb = gpu.uniform("adam_update_params", &params)?;
    let threads = params.total.div_ceil(a.knobs.ept);
    rec.dispatch(
        &pipeline,
        &[
            p,
            g,
            state.m,
            state.v,
            &packed,
            new_p,
            new_state.m,
            new_state.v,
            &pb,
        ],
        grid(gpu, threads, a.knobs.wg),
    )
}

/// What [`run_adam`] reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamOutputs<T> {
    /// New parameter.
    pub p: Vec<T>,
    /// New first moment.
    pub m: Vec<T>,
    /// New second moment.
    pub v: Vec<T>,
}

/// Uploads the inputs, runs [`record_adam`], reads the new parameter and moments back.
#[allow(clippy::too_many_arguments)] // one slice per tensor of the op
pub fn run_adam<T: GpuElement>(
    gpu: &GpuContext,
    p: &[T],
    g: &[T],
    m: &[T],
    v: &[T],
    lr: f32,
    step: i32,
    a: &Adam,
) -> Result<AdamOutputs<T>> {
    check_lens(
        "adam_update",
        &[
            ("p", p.len()),
            ("g", g.len()),
            ("m", m.len()),
            ("v", v.len()),
        ],
        a.len,
    )?;
    let bufs = [
        upload(gpu, "p", p)?,
        upload(gpu, "g", g)?,
        upload(gpu, "m", m)?,
        upload(gpu, "v", v)?,
    ];
    let lrb = gpu.upload("lr", bytemuck::bytes_of(&lr))?;
    let stb = gpu.upload("step", bytemuck::bytes_of(&step))?;
    let outs = [
        output::<T>(gpu, "new_p", a.len)?,
        output::<T>(gpu, "new_m", a.len)?,
        output::<T>(gpu, "new_v", a.len)?,
    ];
    let [pb, gb, mb, vb] = &bufs;
    let [np, nm, nv] = &outs;
    let mut rec = gpu.recorder();
    record_adam::<T>(
        gpu,
        &mut rec,
        pb,
        gb,
        Moments { m: mb, v: vb },
        Scalars {
            lr: &lrb,
            step: &stb,
        },
        np,
        Moments { m: nm, v: nv },
        a,
    )?;
    rec.submit()?;
    Ok(AdamOutputs {
        p: read::<T>(gpu, np, a.len)?,
        m: read::<T>(gpu, nm, a.len)?,
        v: read::<T>(gpu, nv, a.len)?,
    })
}
