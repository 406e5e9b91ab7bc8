//! The kernel table: named function pointers, filled with the portable kernels and then
//! overwritten by ISA kernels the running CPU supports (tract's `generic()`/`plug()` idea).
//!
//! Built once, on first use. `SPORE_CPU_KERNELS=reference|portable|best` forces a tier (so CI
//! can run the suite on each); unset, empty or any other value means `best` — silently, since
//! this leaf crate has no logger ([`Kernels::tier`] says which tier was taken).
//!
//! Adding a kernel (conv2d, depthwise, batch_norm, ...): add a slot and its `*_impl` name to
//! [`Kernels`], fill both in [`Kernels::reference`] and [`Kernels::portable`], overwrite them
//! in `plug_x86_64` where an ISA version exists, and list the slot in [`Kernels::describe`].

use crate::conv2d::Conv2dFn;
use crate::sgemm::SgemmFn;
use std::sync::OnceLock;

/// Which family of kernels fills the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The f64-accumulating oracle (slow; for debugging and CI).
    Reference,
    /// Safe, autovectorised Rust for the baseline target.
    Portable,
    /// Portable, overwritten by the best ISA kernels detected at run time.
    Best,
}

impl Tier {
    /// Parses a `SPORE_CPU_KERNELS` value; anything unrecognised is [`Tier::Best`].
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "reference" | "ref" => Self::Reference,
            "portable" => Self::Portable,
            _ => Self::Best,
        }
    }

    /// The tier `SPORE_CPU_KERNELS` asks for (`Best` when unset).
    pub fn from_env() -> Self {
        std::env::var("SPORE_CPU_KERNELS")
            .map(|v| Self::parse(&v))
            .unwrap_or(Self::Best)
    }
}

/// The table of CPU kernels, one slot per op, each with the name of the implementation in it.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// The tier this table was built for.
    pub tier: Tier,
    /// `C = act(op(A) @ op(B) + bias)`, see [`crate::sgemm::sgemm`].
    pub sgemm: SgemmFn,
    /// Name of the implementation in [`Kernels::sgemm`].
    pub sgemm_impl: &'static str,
    /// `y = act(conv2d(x, w) + bias)`, see [`crate::conv2d::conv2d_fast`].
    pub conv2d: Conv2dFn,
    /// Name of the implementation in [`Kernels::conv2d`].
    pub conv2d_impl: &'static str,
    /// `dx` of a conv2d, see [`crate::conv2d_grad::conv2d_grad_input_fast`].
    pub conv2d_grad_input: crate::conv2d_grad::Conv2dGradInputFn,
    /// Name of the implementation in [`Kernels::conv2d_grad_input`].
    pub conv2d_grad_input_impl: &'static str,
    /// `dw` (and `db`) of a conv2d, see [`crate::conv2d_grad::conv2d_grad_weight_fast`].
    pub conv2d_grad_weight: crate::conv2d_grad::Conv2dGradWeightFn,
    /// Name of the implementation in [`Kernels::conv2d_grad_weight`].
    pub conv2d_grad_weight_impl: &'static str,
    /// `y = act(conv_transpose2d(x, w) + bias)`, see
    /// [`crate::conv_transpose2d::conv_transpose2d_fast`].
    pub conv_transpose2d: crate::conv_transpose2d::ConvTranspose2dFn,
    /// Name of the implementation in [`Kernels::conv_transpose2d`].
    pub conv_transpose2d_impl: &'static str,
    /// `y = act(depthwise_conv2d(x, w) + bias)`, see
    /// [`crate::depthwise_conv2d::depthwise_conv2d_fast`].
    pub depthwise_conv2d: crate::depthwise_conv2d::DepthwiseConv2dFn,
    /// Name of the implementation in [`Kernels::depthwise_conv2d`].
    pub depthwise_conv2d_impl: &'static str,
    /// `dx` of a depthwise conv2d, see
    /// [`crate::depthwise_conv2d::depthwise_conv2d_grad_input_fast`].
    pub depthwise_conv2d_grad_input: crate::depthwise_conv2d::DepthwiseConv2dGradInputFn,
    /// Name of the implementation in [`Kernels::depthwise_conv2d_grad_input`].
    pub depthwise_conv2d_grad_input_impl: &'static str,
    /// `dw` (and `db`) of a depthwise conv2d, see
    /// [`crate::depthwise_conv2d::depthwise_conv2d_grad_weight_fast`].
    pub depthwise_conv2d_grad_weight: crate::depthwise_conv2d::DepthwiseConv2dGradWeightFn,
    /// Name of the implementation in [`Kernels::depthwise_conv2d_grad_weight`].
    pub depthwise_conv2d_grad_weight_impl: &'static str,
    /// Inference batch norm (+ fused activation), see [`crate::batch_norm::batch_norm_inference`].
    pub batch_norm: crate::batch_norm::BatchNormInferenceFn,
    /// Name of the implementation in [`Kernels::batch_norm`].
    pub batch_norm_impl: &'static str,
    /// Training batch norm forward, see [`crate::batch_norm::batch_norm_train`].
    pub batch_norm_train: crate::batch_norm::BatchNormTrainFn,
    /// Name of the implementation in [`Kernels::batch_norm_train`].
    pub batch_norm_train_impl: &'static str,
    /// Batch norm backward, see [`crate::batch_norm::batch_norm_grad`].
    pub batch_norm_grad: crate::batch_norm::BatchNormGradFn,
    /// Name of the implementation in [`Kernels::batch_norm_grad`].
    pub batch_norm_grad_impl: &'static str,
    /// Softmax over the last axis, see [`crate::softmax::softmax`].
    pub softmax: crate::softmax::SoftmaxFn,
    /// Name of the implementation in [`Kernels::softmax`].
    pub softmax_impl: &'static str,
    /// Adam / AdamW update, see [`crate::optimizer::adam`].
    pub adam: crate::optimizer::AdamFn,
    /// Name of the implementation in [`Kernels::adam`].
    pub adam_impl: &'static str,
    /// Training losses (dense cross-entropy, mse, BCE, smooth L1), see [`crate::loss::loss`].
    pub loss: crate::loss::LossFn,
    /// Name of the implementation in [`Kernels::loss`].
    pub loss_impl: &'static str,
    /// Loss gradients wrt the prediction, see [`crate::loss::loss_grad`].
    pub loss_grad: crate::loss::LossGradFn,
    /// Name of the implementation in [`Kernels::loss_grad`].
    pub loss_grad_impl: &'static str,
}

impl Kernels {
    /// The table of reference kernels.
    pub fn reference() -> Self {
        Self {
            tier: Tier::Reference,
            sgemm: crate::sgemm::sgemm_reference,
            sgemm_impl: "reference",
            conv2d: crate::conv2d::conv2d_reference,
            conv2d_impl: "reference",
            conv2d_grad_input: crate::conv2d_grad::conv2d_grad_input_reference,
            conv2d_grad_input_impl: "reference",
            conv2d_grad_weight: crate::conv2d_grad::conv2d_grad_weight_reference,
            conv2d_grad_weight_impl: "reference",
            conv_transpose2d: crate::conv_transpose2d::conv_transpose2d_reference,
            conv_transpose2d_impl: "reference",
            depthwise_conv2d: crate::depthwise_conv2d::depthwise_conv2d_reference,
            depthwise_conv2d_impl: "reference",
            depthwise_conv2d_grad_input:
                crate::depthwise_conv2d::depthwise_conv2d_grad_input_reference,
            depthwise_conv2d_grad_input_impl: "reference",
            depthwise_conv2d_grad_weight:
                crate::depthwise_conv2d::depthwise_conv2d_grad_weight_reference,
            depthwise_conv2d_grad_weight_impl: "reference",
            batch_norm: crate::batch_norm::slots(crate::activation::Isa::Reference).0,
            batch_norm_impl: "reference",
            batch_norm_train: crate::batch_norm::slots(crate::activation::Isa::Reference).1,
            batch_norm_train_impl: "reference",
            batch_norm_grad: crate::batch_norm::slots(crate::activation::Isa::Reference).2,
            batch_norm_grad_impl: "reference",
            softmax: crate::softmax::slot(crate::activation::Isa::Reference),
            softmax_impl: "reference",
            adam: crate::optimizer::adam_slot(crate::activation::Isa::Reference),
            adam_impl: "reference",
            loss: crate::loss::loss_slot(crate::activation::Isa::Reference),
            loss_impl: "reference",
            loss_grad: crate::loss::loss_grad_slot(crate::activation::Isa::Reference),
            loss_grad_impl: "reference",
        }
    }

    /// The table of portable kernels.
    pub fn portable() -> Self {
        Self {
            tier: Tier::Portable,
            sgemm: crate::portable::sgemm::sgemm,
            sgemm_impl: "portable 6x8",
            conv2d: crate::conv2d::conv2d_portable,
            conv2d_impl: "winograd F(4,3) / im2col + portable 6x8, packed weights",
            conv2d_grad_input: crate::conv2d_grad::conv2d_grad_input_portable,
            conv2d_grad_input_impl: "winograd F(4,3) / depthwise / portable 6x8 + col2im",
            conv2d_grad_weight: crate::conv2d_grad::conv2d_grad_weight_portable,
            conv2d_grad_weight_impl: "winograd F(4,3) / depthwise / im2col + portable 6x8",
            conv_transpose2d: crate::conv_transpose2d::conv_transpose2d_portable,
            conv_transpose2d_impl: "portable 6x8 + col2im",
            depthwise_conv2d: crate::depthwise_conv2d::depthwise_conv2d_portable,
            depthwise_conv2d_impl: "portable direct 4x8",
            depthwise_conv2d_grad_input:
                crate::depthwise_conv2d::depthwise_conv2d_grad_input_portable,
            depthwise_conv2d_grad_input_impl: "portable direct",
            depthwise_conv2d_grad_weight:
                crate::depthwise_conv2d::depthwise_conv2d_grad_weight_portable,
            depthwise_conv2d_grad_weight_impl: "portable direct",
            batch_norm: crate::batch_norm::slots(crate::activation::Isa::Portable).0,
            batch_norm_impl: "portable",
            batch_norm_train: crate::batch_norm::slots(crate::activation::Isa::Portable).1,
            batch_norm_train_impl: "portable",
            batch_norm_grad: crate::batch_norm::slots(crate::activation::Isa::Portable).2,
            batch_norm_grad_impl: "portable",
            softmax: crate::softmax::slot(crate::activation::Isa::Portable),
            softmax_impl: "portable",
            adam: crate::optimizer::adam_slot(crate::activation::Isa::Portable),
            adam_impl: "portable",
            loss: crate::loss::loss_slot(crate::activation::Isa::Portable),
            loss_impl: "portable",
            loss_grad: crate::loss::loss_grad_slot(crate::activation::Isa::Portable),
            loss_grad_impl: "portable",
        }
    }

    /// The portable table with every slot the running CPU has a better kernel for replaced.
    pub fn best() -> Self {
        let mut k = Self::portable();
        k.tier = Tier::Best;
        #[cfg(target_arch = "x86_64")]
        plug_x86_64(&mut k);
        k
    }

    /// The table for `tier`.
    pub fn for_tier(tier: Tier) -> Self {
        match tier {
            Tier::Reference => Self::reference(),
            Tier::Portable => Self::portable(),
            Tier::Best => Self::best(),
        }
    }

    /// `(slot, implementation)` pairs, for `spore devices`.
    pub fn describe(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("sgemm", self.sgemm_impl),
            ("conv2d", self.conv2d_impl),
            ("conv2d_grad_input", self.conv2d_grad_input_impl),
            ("conv2d_grad_weight", self.conv2d_grad_weight_impl),
            ("conv_transpose2d", self.conv_transpose2d_impl),
            ("depthwise_conv2d", self.depthwise_conv2d_impl),
            (
                "depthwise_conv2d_grad_input",
                self.depthwise_conv2d_grad_input_impl,
            ),
            (
                "depthwise_conv2d_grad_weight",
                self.depthwise_conv2d_grad_weight_impl,
            ),
            ("batch_norm", self.batch_norm_impl),
            ("batch_norm_train", self.batch_norm_train_impl),
            ("batch_norm_grad", self.batch_norm_grad_impl),
            ("softmax", self.softmax_impl),
            ("adam", self.adam_impl),
            ("loss", self.loss_impl),
            ("loss_grad", self.loss_grad_impl),
        ]
    }
}

/// Overwrites the slots that have an x86_64 kernel this CPU can run.
#[cfg(target_arch = "x86_64")]
fn plug_x86_64(k: &mut Kernels) {
    if crate::x86_64::sgemm_avx2::available() {
        k.sgemm = crate::x86_64::sgemm_avx2::sgemm;
        k.sgemm_impl = "avx2+fma 6x16";
        k.conv2d = crate::conv2d::conv2d_avx2;
        k.conv2d_impl = "stem direct / winograd F(4,3) / im2col + avx2+fma 6x16, packed weights";
        k.conv2d_grad_input = crate::conv2d_grad::conv2d_grad_input_avx2;
        k.conv2d_grad_input_impl = "winograd F(4,3) / depthwise / avx2+fma 6x16 + col2im";
        k.conv2d_grad_weight = crate::conv2d_grad::conv2d_grad_weight_avx2;
        k.conv2d_grad_weight_impl = "winograd F(4,3) / depthwise / im2col + avx2+fma 6x16";
        k.conv_transpose2d = crate::conv_transpose2d::conv_transpose2d_avx2;
        k.conv_transpose2d_impl = "avx2+fma 6x16 + col2im";
    }
    if crate::x86_64::sgemm_avx512::available() {
        k.sgemm = crate::x86_64::sgemm_avx512::sgemm;
        k.sgemm_impl = "avx512f 14x32";
    }
    if crate::x86_64::depthwise_avx2::available() {
        k.depthwise_conv2d = crate::x86_64::depthwise_avx2::depthwise_conv2d;
        k.depthwise_conv2d_impl = "avx2+fma direct 8x8";
        k.depthwise_conv2d_grad_input = crate::x86_64::depthwise_avx2::depthwise_conv2d_grad_input;
        k.depthwise_conv2d_grad_input_impl = "avx2+fma direct";
        k.depthwise_conv2d_grad_weight =
            crate::x86_64::depthwise_avx2::depthwise_conv2d_grad_weight;
        k.depthwise_conv2d_grad_weight_impl = "avx2+fma direct";
    }
    if crate::x86_64::elementwise_avx2::available() {
        let avx2 = crate::activation::Isa::Avx2;
        (k.batch_norm, k.batch_norm_train, k.batch_norm_grad) = crate::batch_norm::slots(avx2);
        k.batch_norm_impl = "avx2+fma";
        k.batch_norm_train_impl = "avx2+fma";
        k.batch_norm_grad_impl = "avx2+fma";
        k.softmax = crate::softmax::slot(avx2);
        k.softmax_impl = "avx2+fma";
        k.adam = crate::optimizer::adam_slot(avx2);
        k.adam_impl = "avx2+fma";
    }
    if crate::x86_64::loss_avx2::available() {
        let avx2 = crate::activation::Isa::Avx2;
        k.loss = crate::loss::loss_slot(avx2);
        k.loss_impl = "avx2+fma";
        k.loss_grad = crate::loss::loss_grad_slot(avx2);
        k.loss_grad_impl = "avx2+fma";
    }
}

/// The process-wide table, built on first use for the tier `SPORE_CPU_KERNELS` asks for.
pub fn kernels() -> &'static Kernels {
    static TABLE: OnceLock<Kernels> = OnceLock::new();
    TABLE.get_or_init(|| Kernels::for_tier(Tier::from_env()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_describe() {
        assert_eq!(Tier::parse("reference"), Tier::Reference);
        assert_eq!(Tier::parse("Portable"), Tier::Portable);
        assert_eq!(Tier::parse("best"), Tier::Best);
        assert_eq!(Tier::parse("nonsense"), Tier::Best);
        assert_eq!(
            Kernels::reference().describe(),
            vec![
                ("sgemm", "reference"),
                ("conv2d", "reference"),
                ("conv2d_grad_input", "reference"),
                ("conv2d_grad_weight", "reference"),
                ("conv_transpose2d", "reference"),
                ("depthwise_conv2d", "reference"),
                ("depthwise_conv2d_grad_input", "reference"),
                ("depthwise_conv2d_grad_weight", "reference"),
                ("batch_norm", "reference"),
                ("batch_norm_train", "reference"),
                ("batch_norm_grad", "reference"),
                ("softmax", "reference"),
                ("adam", "reference"),
                ("loss", "reference"),
                ("loss_grad", "reference"),
            ]
        );
        assert_eq!(
            Kernels::portable().describe(),
            vec![
                ("sgemm", "portable 6x8"),
                (
                    "conv2d",
                    "winograd F(4,3) / im2col + portable 6x8, packed weights"
                ),
                (
                    "conv2d_grad_input",
                    "winograd F(4,3) / depthwise / portable 6x8 + col2im"
                ),
                (
                    "conv2d_grad_weight",
                    "winograd F(4,3) / depthwise / im2col + portable 6x8"
                ),
                ("conv_transpose2d", "portable 6x8 + col2im"),
                ("depthwise_conv2d", "portable direct 4x8"),
                ("depthwise_conv2d_grad_input", "portable direct"),
                ("depthwise_conv2d_grad_weight", "portable direct"),
                ("batch_norm", "portable"),
                ("batch_norm_train", "portable"),
                ("batch_norm_grad", "portable"),
                ("softmax", "portable"),
                ("adam", "portable"),
                ("loss", "portable"),
                ("loss_grad", "portable"),
            ]
        );
        let best = Kernels::best();
        println!("best: {:?}", best.describe());
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            let sgemm = if crate::x86_64::sgemm_avx512::available() {
                "avx512f 14x32"
            } else {
                "avx2+fma 6x16"
            };
            assert_eq!(best.sgemm_impl, sgemm);
            assert_eq!(
                best.conv2d_impl,
                "stem direct / winograd F(4,3) / im2col + avx2+fma 6x16, packed weights"
            );
            assert_eq!(
                best.conv2d_grad_input_impl,
                "winograd F(4,3) / depthwise / avx2+fma 6x16 + col2im"
            );
            assert_eq!(
                best.conv2d_grad_weight_impl,
                "winograd F(4,3) / depthwise / im2col + avx2+fma 6x16"
            );
            assert_eq!(best.conv_transpose2d_impl, "avx2+fma 6x16 + col2im");
            assert_eq!(best.depthwise_conv2d_impl, "avx2+fma direct 8x8");
        }
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::elementwise_avx2::available() {
            assert_eq!(best.batch_norm_impl, "avx2+fma");
            assert_eq!(best.softmax_impl, "avx2+fma");
            assert_eq!(best.adam_impl, "avx2+fma");
            assert_eq!(best.loss_impl, "avx2+fma");
            assert_eq!(best.loss_grad_impl, "avx2+fma");
        }
        assert_eq!(kernels().describe().len(), 15);
    }

    #[test]
    fn reference_tier_via_dispatch_table() {
        crate::sgemm::tests::check_tier("dispatch-reference", Kernels::reference().sgemm);
        crate::sgemm::tests::check_tier("dispatch-portable", Kernels::portable().sgemm);
    }
}
