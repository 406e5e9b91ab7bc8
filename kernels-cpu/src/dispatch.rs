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
        }
    }

    /// The table of portable kernels.
    pub fn portable() -> Self {
        Self {
            tier: Tier::Portable,
            sgemm: crate::portable::sgemm::sgemm,
            sgemm_impl: "portable 6x8",
            conv2d: crate::conv2d::conv2d_portable,
            conv2d_impl: "im2col + portable 6x8",
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
        vec![("sgemm", self.sgemm_impl), ("conv2d", self.conv2d_impl)]
    }
}

/// Overwrites the slots that have an x86_64 kernel this CPU can run.
#[cfg(target_arch = "x86_64")]
fn plug_x86_64(k: &mut Kernels) {
    if crate::x86_64::sgemm_avx2::available() {
        k.sgemm = crate::x86_64::sgemm_avx2::sgemm;
        k.sgemm_impl = "avx2+fma 6x16";
        k.conv2d = crate::conv2d::conv2d_avx2;
        k.conv2d_impl = "im2col + avx2+fma 6x16";
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
            vec![("sgemm", "reference"), ("conv2d", "reference")]
        );
        assert_eq!(
            Kernels::portable().describe(),
            vec![
                ("sgemm", "portable 6x8"),
                ("conv2d", "im2col + portable 6x8")
            ]
        );
        let best = Kernels::best();
        println!("best: {:?}", best.describe());
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            assert_eq!(best.sgemm_impl, "avx2+fma 6x16");
            assert_eq!(best.conv2d_impl, "im2col + avx2+fma 6x16");
        }
        assert_eq!(kernels().describe().len(), 2);
    }

    #[test]
    fn reference_tier_via_dispatch_table() {
        crate::sgemm::tests::check_tier("dispatch-reference", Kernels::reference().sgemm);
        crate::sgemm::tests::check_tier("dispatch-portable", Kernels::portable().sgemm);
    }
}
