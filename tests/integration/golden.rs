//! Cross-framework check: PyTorch's outputs for LeNet-5 and a narrow MobileNetV2 at 32x32
//! (made by tools/golden/make_golden.py, committed) reproduced by Spore's zoo models with the
//! same weights, converted NCHW/OIHW -> NHWC/OHWI, to 1e-4 relative.

use spore::graph::Graph;
use spore::models::{ModelConfig, lenet5, mobilenet_v2, torch};
use spore::session::{Context, Model, Session};
use spore::{Result, Tensor};

struct Golden {
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    input_nchw: (Vec<usize>, Vec<f32>),
    output: (Vec<usize>, Vec<f32>),
}

fn load(name: &str) -> Golden {
    let path = format!(
        "{}/tools/golden/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut params = Vec::new();
    let (mut input, mut output) = (None, None);
    for (key, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape = view.shape().to_vec();
        match key.as_str() {
            "__input__" => input = Some((shape, data)),
            "__output__" => output = Some((shape, data)),
            _ => params.push((key, shape, data)),
        }
    }
    Golden {
        params,
        input_nchw: input.unwrap(),
        output: output.unwrap(),
    }
}

fn nchw_to_nhwc(dims: &[usize], data: &[f32]) -> Tensor {
    let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let mut out = vec![0f32; data.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = data[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    Tensor::from_vec(&[n, h, w, c], out).unwrap()
}

fn check(name: &str, build: fn(&ModelConfig) -> Result<Graph>, cfg: ModelConfig) {
    let g = load(name);
    let template = build(&cfg).unwrap();
    let source = torch::import_state_dict(
        &template,
        g.params
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
    )
    .unwrap();
    let graph = build(&ModelConfig {
        params: Some(source),
        ..cfg
    })
    .unwrap();
    let mut s = Session::new(&Context::cpu(), &Model::from_graph(graph)).unwrap();
    *s.input_by_tensor_name("data").unwrap() = nchw_to_nhwc(&g.input_nchw.0, &g.input_nchw.1);
    s.run().unwrap();
    let got = s.output_by_tensor_name("logits").unwrap();
    assert_eq!(got.dims(), g.output.0.as_slice(), "{name}: logits shape");
    let err = crate::common::rel_l2(got.as_slice::<f32>().unwrap(), &g.output.1);
    println!("{name}: relative L2 error vs PyTorch {err:.2e}");
    assert!(err <= 1e-4, "{name}: relative error {err:e} vs PyTorch");
}

#[test]
fn lenet5_matches_pytorch() {
    let cfg = ModelConfig {
        input_size: 32,
        in_channels: 1,
        classes: 10,
        batch: 2,
        ..Default::default()
    };
    check("lenet5", lenet5, cfg);
}

#[test]
fn mobilenet_v2_matches_pytorch() {
    let cfg = ModelConfig {
        input_size: 32,
        in_channels: 3,
        classes: 10,
        width_multiplier: 0.25,
        batch: 2,
        ..Default::default()
    };
    check("mobilenet_v2_w025_32", mobilenet_v2, cfg);
}
