//! The shader registry: every `.wgsl` file under `shaders/`, embedded at compile time, and
//! the preludes that make each one valid WGSL for an element type.

use crate::error::{Error, Result};

/// Prelude prepended for f32 kernels.
pub const PRELUDE_F32: &str = include_str!("../../../shaders/prelude/f32.wgsl");
/// Prelude prepended for f16 kernels (needs `SHADER_F16`).
pub const PRELUDE_F16: &str = include_str!("../../../shaders/prelude/f16.wgsl");

macro_rules! shaders {
    ($($name:ident),* $(,)?) => {
        /// Every registered shader: `(name, source without prelude)`.
        pub const SHADERS: &[(&str, &str)] = &[
            $((stringify!($name), include_str!(concat!("../../../shaders/", stringify!($name), ".wgsl"))),)*
        ];
    };
}

shaders! {
    bias_add,
    batch_norm,
    batch_norm_combine,
    batch_norm_stats,
    binary,
    depthwise_conv2d,
    depthwise_conv2d_naive,
    depthwise_conv2d_vec4,
    global_avg_pool,
    pool2d,
    reduce,
    softmax,
    unary,
    matmul,
    matmul_naive,
    matmul_small,
    matmul_splitk,
    matmul_splitk_reduce,
    conv2d,
    conv2d_naive,
    conv_transpose2d,
    concat,
    dropout,
    loss_rows,
    loss_elem,
    loss_reduce,
    matmul_rows,
    conv2d_rows,
    conv2d_grad_input,
    conv2d_grad_input_naive,
    conv2d_grad_weight,
    conv2d_grad_weight_naive,
    depthwise_conv2d_grad_input,
    depthwise_conv2d_grad_input_naive,
    depthwise_conv2d_grad_input_vec4,
    depthwise_conv2d_grad_weight,
    depthwise_conv2d_grad_weight_naive,
    depthwise_conv2d_grad_weight_vec4,
    // gelem: non-conv gradients and optimizer updates.
    activation_grad,
    softmax_grad,
    binary_grad,
    broadcast_to,
    slice,
    loss_grad,
    pool2d_grad,
    batch_norm_grad_stats,
    batch_norm_grad_combine,
    batch_norm_grad_apply,
    sgd_update,
    adam_update,
    // lead: fused elementwise chains (plan::fuse).
    elementwise_chain,
}

/// Shared WGSL snippets (`shaders/snippets/<name>.wgsl`): `(name, source)`. A snippet is not
/// a shader on its own; [`source`] prepends it, after the prelude, to the shaders that list it
/// in [`SHADER_SNIPPETS`], so e.g. every fused epilogue uses the same `activate()`.
pub const SNIPPETS: &[(&str, &str)] = &[(
    "activation",
    include_str!("../../../shaders/snippets/activation.wgsl"),
)];

/// The snippets each shader needs, in prepend order (shaders not listed need none).
pub const SHADER_SNIPPETS: &[(&str, &[&str])] = &[
    ("batch_norm", &["activation"]),
    ("activation_grad", &["activation"]),
    ("depthwise_conv2d", &["activation"]),
    ("depthwise_conv2d_naive", &["activation"]),
    ("depthwise_conv2d_vec4", &["activation"]),
    ("unary", &["activation"]),
    ("matmul", &["activation"]),
    ("matmul_naive", &["activation"]),
    ("matmul_small", &["activation"]),
    ("matmul_splitk_reduce", &["activation"]),
    ("conv2d", &["activation"]),
    ("conv2d_naive", &["activation"]),
    ("conv_transpose2d", &["activation"]),
    ("matmul_rows", &["activation"]),
    ("conv2d_rows", &["activation"]),
    ("elementwise_chain", &["activation"]),
];

/// The snippet sources shader `name` needs, in order.
fn snippets_for(name: &str) -> Result<Vec<&'static str>> {
    let wanted = SHADER_SNIPPETS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(&[][..], |(_, s)| *s);
    wanted
        .iter()
        .map(|w| {
            SNIPPETS
                .iter()
                .find(|(n, _)| n == w)
                .map(|(_, s)| *s)
                .ok_or_else(|| Error::NotSupported {
                    what: format!("shader `{name}` needs unknown snippet `{w}`"),
                })
        })
        .collect()
}

/// The registered source of shader `name` (without prelude).
pub fn raw(name: &str) -> Result<&'static str> {
    SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::NotSupported {
            what: format!("no shader named `{name}`"),
        })
}

/// The full source of shader `name` for element type `elem` (`"f32"` or `"f16"`).
pub fn source(name: &str, elem: &str) -> Result<String> {
    let prelude = match elem {
        "f32" => PRELUDE_F32,
        "f16" => PRELUDE_F16,
        other => {
            return Err(Error::NotSupported {
                what: format!("shader element type `{other}`"),
            });
        }
    };
    let body = raw(name)?;
    let mut out = String::from(prelude);
    for snippet in snippets_for(name)? {
        out.push('\n');
        out.push_str(snippet);
    }
    out.push('\n');
    out.push_str(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    fn validate(name: &str, elem: &str) -> naga::Module {
        let src = source(name, elem).unwrap();
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}/{elem}: {}", e.emit_to_string(&src)));
        // The capabilities the device is actually asked for: f16 only for the f16 prelude.
        let caps = if elem == "f16" {
            naga::valid::Capabilities::SHADER_FLOAT16
        } else {
            naga::valid::Capabilities::empty()
        };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}/{elem}: {}", e.emit_to_string(&src)));
        module
    }

    #[test]
    fn every_shader_validates_with_every_prelude() {
        for (name, _) in SHADERS {
            for elem in ["f32", "f16"] {
                let module = validate(name, elem);
                let main = module.entry_points.iter().find(|e| e.name == "main");
                let main = main.unwrap_or_else(|| panic!("{name}: no entry point `main`"));
                assert_eq!(
                    main.stage,
                    naga::ShaderStage::Compute,
                    "{name}: main is not compute"
                );
            }
        }
    }

    #[test]
    fn every_file_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "wgsl").then(|| p.file_stem().unwrap().to_string_lossy().into())
            })
            .collect();
        on_disk.sort();
        let mut registered: Vec<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
        registered.sort();
        assert_eq!(
            on_disk, registered,
            "shaders/*.wgsl and the shaders! registry differ"
        );
    }

    /// Size of the `params` uniform's struct as naga lays it out.
    pub(crate) fn params_size(name: &str) -> u32 {
        let module = validate(name, "f32");
        let var = module
            .global_variables
            .iter()
            .find(|(_, v)| v.name.as_deref() == Some("params"))
            .unwrap_or_else(|| panic!("{name}: no `params` uniform"))
            .1;
        match &module.types[var.ty].inner {
            naga::TypeInner::Struct { span, .. } => *span,
            other => panic!("{name}: params is {other:?}, not a struct"),
        }
    }

    #[test]
    fn params_structs_match_the_host_mirrors() {
        for (name, host) in crate::backend::gpu::kernels::PARAMS_SIZES {
            assert_eq!(
                params_size(name) as usize,
                *host,
                "{name}: WGSL Params vs #[repr(C)] mirror"
            );
        }
        assert!(raw("nope").is_err());
        assert!(source("bias_add", "f64").is_err());
    }
}
