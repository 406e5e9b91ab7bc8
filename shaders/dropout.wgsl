// dropout: y[i] = x[i] * scale if uniform(seed, i) >= rate else 0 (training-mode inverted
// dropout), the counter-based mask of kernels-cpu's `rng::uniform` bit for bit, so the GPU,
// every CPU thread split and the reference drop exactly the same elements.
//
// The mask draw is SplitMix64 arithmetic on 64-bit integers, which WGSL lacks: a u64 is a
// vec2<u32> (x = low word, y = high word) and the 64-bit multiply is built from 16-bit
// partial products. The host pre-multiplies the seed by the golden-ratio constant.
//
// Bindings:  0 x (read, total Elem), 1 y (read_write, total Elem), 2 params (uniform Params).
// Params:    total; seed_lo / seed_hi = seed * 0x9e3779b97f4a7c15 (wrapping); rate (f32, the
//            threshold compared with the 24-bit draw, exact in f32); scale = 1 / (1 - rate).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  ceil(total / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG.
// Features:  none; the product is computed in f32 and stored as Elem.

struct Params {
    total: u32,
    seed_lo: u32,
    seed_hi: u32,
    rate: f32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

// Full 32 x 32 -> 64-bit product of a and b.
fn mul32_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Middle column: carries out of the low word go to the high word.
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// Wrapping 64-bit product (low 64 bits).
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let p = mul32_wide(a.x, b.x);
    return vec2<u32>(p.x, p.y + a.x * b.y + a.y * b.x);
}

// z ^ (z >> s) for 0 < s < 32.
fn xorshr(z: vec2<u32>, s: u32) -> vec2<u32> {
    let shifted = vec2<u32>((z.x >> s) | (z.y << (32u - s)), z.y >> s);
    return z ^ shifted;
}

// SplitMix64's finaliser (kernels-cpu `rng::mix64`).
fn mix64(z0: vec2<u32>) -> vec2<u32> {
    var z = mul64(xorshr(z0, 30u), vec2<u32>(0x1ce4e5b9u, 0xbf58476du));
    z = mul64(xorshr(z, 27u), vec2<u32>(0x133111ebu, 0x94d049bbu));
    return xorshr(z, 31u);
}

// kernels-cpu `rng::uniform(seed, i)`: the high word of mix64(seed' ^ mix64(i)), top 24 bits.
fn draw(i: u32) -> f32 {
    let h = mix64(vec2<u32>(params.seed_lo, params.seed_hi) ^ mix64(vec2<u32>(i, 0u)));
    return f32(h.y >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    var v = 0.0;
    if (draw(i) >= params.rate) {
        v = f32(x[i]) * params.scale;
    }
    y[i] = Elem(v);
}
