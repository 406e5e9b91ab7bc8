//! Shared 2-D sliding-window geometry for every convolution and pooling kernel: padding,
//! output sizes, and the map between (output position, kernel tap) and input position.
//!
//! Convention (TF, PyTorch and ONNX agree): along one axis, output position `o` and kernel tap
//! `k` read input position `o * stride + k * dilation - pad_before`; positions outside
//! `[0, input)` are padding. The output size is
//! `(input + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride + 1` (floor), so
//! every window lies inside the padded input and a trailing partial window is dropped. Padding
//! may be asymmetric; TF "SAME" padding puts the odd extra cell at the end ([`same_padding`]).
//!
//! All arithmetic here is checked: a hostile shape yields an error or `None`, never a wrapped
//! index.

use std::ops::Range;

use crate::error::{Result, check_param};

/// Zero padding around the two spatial axes of an NHWC tensor, in cells. Asymmetric padding is
/// allowed (TF SAME and ONNX explicit pads both need it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding2d {
    /// Cells added before row 0.
    pub top: usize,
    /// Cells added after the last row.
    pub bottom: usize,
    /// Cells added before column 0.
    pub left: usize,
    /// Cells added after the last column.
    pub right: usize,
}

impl Padding2d {
    /// No padding ("VALID").
    pub const ZERO: Self = Self {
        top: 0,
        bottom: 0,
        left: 0,
        right: 0,
    };

    /// Padding with each side given explicitly.
    pub const fn new(top: usize, bottom: usize, left: usize, right: usize) -> Self {
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    /// `ph` cells above and below, `pw` cells left and right (PyTorch's `padding=(ph, pw)`).
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Self {
            top: ph,
            bottom: ph,
            left: pw,
            right: pw,
        }
    }

    /// TF "SAME" padding for an `input = (h, w)` tensor and a window of `kernel = (kh, kw)`,
    /// `stride = (sh, sw)`, `dilation = (dh, dw)`: the output has `ceil(input / stride)` cells per
    /// axis and an odd total padding puts the extra cell at the bottom / right. See
    /// [`same_padding`] for degenerate arguments.
    pub fn same(
        input: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> Self {
        let (top, bottom) = same_padding(input.0, kernel.0, stride.0, dilation.0);
        let (left, right) = same_padding(input.1, kernel.1, stride.1, dilation.1);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }
}

/// TF "SAME" padding along one axis, as `(before, after)`: the smallest total padding that makes
/// the output `ceil(input / stride)` cells long, split with the extra cell (if odd) after.
///
/// Degenerate arguments (zero stride, kernel or dilation) give `(0, 0)` rather than an error, so
/// that the kernel's own validation reports the bad parameter by name. Sizes that would overflow
/// saturate, which the kernel's checked output-size computation then refuses.
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    if stride == 0 || kernel == 0 || dilation == 0 {
        return (0, 0);
    }
    let effective = dilation.saturating_mul(kernel - 1).saturating_add(1);
    let out = input.div_ceil(stride);
    let needed = out
        .saturating_sub(1)
        .saturating_mul(stride)
        .saturating_add(effective);
    let total = needed.saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Which spatial axis a [`Window1d`] describes; it only picks the parameter names that errors
/// report, so a message says `stride_w` rather than a generic `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Rows (`h`, `kh`, `stride_h`, `dilation_h`, padding top/bottom).
    H,
    /// Columns (`w`, `kw`, `stride_w`, `dilation_w`, padding left/right).
    W,
}

impl Axis {
    fn input_name(self) -> &'static str {
        match self {
            Self::H => "h",
            Self::W => "w",
        }
    }
    fn kernel_name(self) -> &'static str {
        match self {
            Self::H => "kh",
            Self::W => "kw",
        }
    }
    fn stride_name(self) -> &'static str {
        match self {
            Self::H => "stride_h",
            Self::W => "stride_w",
        }
    }
    fn dilation_name(self) -> &'static str {
        match self {
            Self::H => "dilation_h",
            Self::W => "dilation_w",
        }
    }
    fn padding_name(self) -> &'static str {
        match self {
            Self::H => "padding.top/bottom",
            Self::W => "padding.left/right",
        }
    }
}

/// A sliding window along one axis: the geometry every conv and pool loop is written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window1d {
    /// Input length (unpadded).
    pub input: usize,
    /// Kernel taps.
    pub kernel: usize,
    /// Step between consecutive windows.
    pub stride: usize,
    /// Step between consecutive taps of one window (1 = dense).
    pub dilation: usize,
    /// Padding cells before position 0.
    pub pad_before: usize,
    /// Padding cells after the last position.
    pub pad_after: usize,
}

impl Window1d {
    /// Span of one window in input cells, `dilation * (kernel - 1) + 1`; `None` on zero kernel
    /// or dilation, or overflow.
    pub fn effective_kernel(&self) -> Option<usize> {
        if self.kernel == 0 || self.dilation == 0 {
            return None;
        }
        self.dilation.checked_mul(self.kernel - 1)?.checked_add(1)
    }

    /// Number of output positions, or `None` when the parameters are invalid (zero sizes,
    /// overflow, or a window longer than the padded input).
    pub fn output_len(&self) -> Option<usize> {
        if self.input == 0 || self.stride == 0 {
            return None;
        }
        let padded = self
            .input
            .checked_add(self.pad_before)?
            .checked_add(self.pad_after)?;
        let span = padded.checked_sub(self.effective_kernel()?)?;
        Some(span / self.stride + 1)
    }

    /// Validates the window and returns the output length, with errors naming `kernel`'s
    /// parameter for `axis`.
    pub fn out_size(&self, kernel: &'static str, axis: Axis) -> Result<usize> {
        check_param(kernel, axis.input_name(), self.input > 0, || {
            "must be positive".into()
        })?;
        check_param(kernel, axis.kernel_name(), self.kernel > 0, || {
            "must be positive".into()
        })?;
        check_param(kernel, axis.stride_name(), self.stride > 0, || {
            "must be positive".into()
        })?;
        check_param(kernel, axis.dilation_name(), self.dilation > 0, || {
            "must be positive".into()
        })?;
        let effective = self.effective_kernel();
        check_param(kernel, axis.dilation_name(), effective.is_some(), || {
            format!(
                "dilated kernel size {} * ({} - 1) + 1 overflows",
                self.dilation, self.kernel
            )
        })?;
        let padded = self
            .input
            .checked_add(self.pad_before)
            .and_then(|v| v.checked_add(self.pad_after));
        check_param(kernel, axis.padding_name(), padded.is_some(), || {
            format!(
                "padded size {} + {} + {} overflows",
                self.pad_before, self.input, self.pad_after
            )
        })?;
        let out = self.output_len();
        check_param(kernel, axis.kernel_name(), out.is_some(), || {
            format!(
                "window of {} cells (kernel {}, dilation {}) exceeds padded input of {} cells \
                 ({} + {} + {}): output size would be <= 0",
                effective.unwrap_or(0),
                self.kernel,
                self.dilation,
                padded.unwrap_or(0),
                self.pad_before,
                self.input,
                self.pad_after
            )
        })?;
        Ok(out.unwrap_or(0))
    }

    /// Input position read by output position `out` at kernel tap `tap`, or `None` when that
    /// cell is padding (or the arithmetic overflows).
    pub fn input_index(&self, out: usize, tap: usize) -> Option<usize> {
        let pos = out
            .checked_mul(self.stride)?
            .checked_add(tap.checked_mul(self.dilation)?)?;
        let i = pos.checked_sub(self.pad_before)?;
        (i < self.input).then_some(i)
    }

    /// The inverse of [`input_index`](Self::input_index) for a fixed tap: the output position
    /// whose window reads input position `input` at tap `tap`, if there is one.
    pub fn output_index(&self, input: usize, tap: usize) -> Option<usize> {
        if input >= self.input || self.stride == 0 {
            return None;
        }
        let pos = input
            .checked_add(self.pad_before)?
            .checked_sub(tap.checked_mul(self.dilation)?)?;
        if !pos.is_multiple_of(self.stride) {
            return None;
        }
        let out = pos / self.stride;
        (out < self.output_len()?).then_some(out)
    }

    /// The taps of output position `out` that read real (non-padding) cells. The input position
    /// `out * stride + tap * dilation - pad_before` grows with the tap, so they form one
    /// contiguous range; iterating it instead of `0..kernel` keeps a window's cost bounded by
    /// the input size even when huge padding allows a huge kernel (pooling has no weight slice
    /// whose length would bound `kernel`).
    pub fn taps(&self, out: usize) -> Range<usize> {
        let (Some(start), Some(end)) = (
            out.checked_mul(self.stride),
            self.pad_before.checked_add(self.input),
        ) else {
            return 0..0;
        };
        if self.dilation == 0 || end <= start {
            return 0..0;
        }
        // First tap at or after position 0 (input index pad_before), first tap at or after the
        // input's end; both in "padded" coordinates, where the window starts at `start`.
        let lo = self
            .pad_before
            .saturating_sub(start)
            .div_ceil(self.dilation);
        let hi = (end - start).div_ceil(self.dilation);
        lo.min(self.kernel)..hi.min(self.kernel)
    }

    /// Whether the window of output position `out` reads at least one real (non-padding) cell.
    pub fn window_hits_input(&self, out: usize) -> bool {
        !self.taps(out).is_empty()
    }

    /// The first output position whose window reads only padding, if any (`None` as well when
    /// the window itself is invalid: [`out_size`](Self::out_size) reports that).
    pub fn first_padding_only_window(&self) -> Option<usize> {
        let out = self.output_len()?;
        if self.input >= self.dilation {
            // Consecutive taps are at most `input` apart, so a window cannot straddle the
            // input without landing in it: it misses only by lying wholly before the input
            // (worst for the first window) or by starting at or after its end.
            if !self.window_hits_input(0) {
                return Some(0);
            }
            let first_after = self
                .pad_before
                .checked_add(self.input)?
                .div_ceil(self.stride);
            (first_after < out).then_some(first_after)
        } else {
            // Taps can jump over the whole input from any window: check each.
            (0..out).find(|&o| !self.window_hits_input(o))
        }
    }
}

/// A 2-D sliding window over the H and W axes of an NHWC tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Geometry along H.
    pub h: Window1d,
    /// Geometry along W.
    pub w: Window1d,
}

impl Window2d {
    /// The window of an `input = (h, w)` tensor with `kernel = (kh, kw)`, `stride = (sh, sw)`,
    /// `dilation = (dh, dw)` and `padding`.
    pub fn new(
        input: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding2d,
    ) -> Self {
        Self {
            h: Window1d {
                input: input.0,
                kernel: kernel.0,
                stride: stride.0,
                dilation: dilation.0,
                pad_before: padding.top,
                pad_after: padding.bottom,
            },
            w: Window1d {
                input: input.1,
                kernel: kernel.1,
                stride: stride.1,
                dilation: dilation.1,
                pad_before: padding.left,
                pad_after: padding.right,
            },
        }
    }

    /// Validates both axes and returns the output `(out_h, out_w)`.
    pub fn out_hw(&self, kernel: &'static str) -> Result<(usize, usize)> {
        Ok((
            self.h.out_size(kernel, Axis::H)?,
            self.w.out_size(kernel, Axis::W)?,
        ))
    }

    /// Refuses padding so large that some window reads only padding (pooling has no value to
    /// give such a window: no maximum, no valid-cell mean). A 2-D window hits the input iff its
    /// row range and its column range each do, so checking the axes separately is exact.
    pub fn require_every_window_hits_input(&self, kernel: &'static str) -> Result<()> {
        self.out_hw(kernel)?;
        let bad_h = self.h.first_padding_only_window();
        check_param(kernel, Axis::H.padding_name(), bad_h.is_none(), || {
            format!("output row {} reads only padding", bad_h.unwrap_or(0))
        })?;
        let bad_w = self.w.first_padding_only_window();
        check_param(kernel, Axis::W.padding_name(), bad_w.is_none(), || {
            format!("output column {} reads only padding", bad_w.unwrap_or(0))
        })
    }
}

/// Flat index of `i` in a row-major 4-D tensor of shape `dims` (NHWC activations, OHWI
/// weights). Callers validate shapes first, so the index is in bounds and cannot overflow.
#[inline]
pub(crate) fn idx4(dims: [usize; 4], i: [usize; 4]) -> usize {
    ((i[0] * dims[1] + i[1]) * dims[2] + i[2]) * dims[3] + i[3]
}

/// Helpers for the conv and pool test suites: random window geometries that cover the cases
/// the gradients must handle, and f32/f64 conversions.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Padding2d;
    use crate::rng::Rng;

    /// A window geometry along both axes plus the input size it was drawn for.
    #[derive(Debug, Clone, Copy)]
    pub struct Geo {
        pub h: usize,
        pub w: usize,
        pub kh: usize,
        pub kw: usize,
        pub sh: usize,
        pub sw: usize,
        pub dh: usize,
        pub dw: usize,
        pub padding: Padding2d,
    }

    /// A random geometry; `case` forces a feature so a loop over cases covers them all:
    /// 0 plain, 1 stride 2, 2 dilation 2, 3 SAME, 4 asymmetric explicit padding,
    /// 5 SAME with stride 2 and dilation 2, 6 ragged (kernel 1 x 3 or 3 x 1), else random.
    /// `dilation` false keeps dilation 1 (average pooling has none). Sizes stay <= `max_hw`.
    /// The result may still be invalid for a given op; callers redraw until it validates.
    pub fn random_geo(rng: &mut Rng, case: usize, max_hw: usize, dilation: bool) -> Geo {
        let mut kh = rng.range(1, 3);
        let mut kw = rng.range(1, 3);
        let mut sh = rng.range(1, 2);
        let mut sw = rng.range(1, 2);
        let mut dh = if dilation { rng.range(1, 2) } else { 1 };
        let mut dw = if dilation { rng.range(1, 2) } else { 1 };
        let mut same = rng.range(0, 3) == 0;
        let mut pad = [
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 2),
        ];
        match case {
            0 => {
                (sh, sw, dh, dw, same) = (1, 1, 1, 1, false);
                pad = [0; 4];
            }
            1 => (sh, sw) = (2, 2),
            2 if dilation => (dh, dw, kh, kw) = (2, 2, 2.max(kh), 2.max(kw)),
            3 => same = true,
            4 => {
                same = false;
                pad = [1, 0, 0, 2];
            }
            5 => {
                same = true;
                (sh, sw) = (2, 2);
                if dilation {
                    (dh, dw) = (2, 2);
                }
            }
            6 => {
                (kh, kw) = if rng.range(0, 1) == 0 { (1, 3) } else { (3, 1) };
            }
            _ => {}
        }
        let h = rng.range(1, max_hw);
        let w = rng.range(1, max_hw);
        let padding = if same {
            Padding2d::same((h, w), (kh, kw), (sh, sw), (dh, dw))
        } else {
            Padding2d::new(pad[0], pad[1], pad[2], pad[3])
        };
        Geo {
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            padding,
        }
    }

    /// Redraws `draw` until `valid` accepts its result, so random tests never start from an
    /// invalid shape (the error paths have their own tests).
    pub fn draw_valid<P>(
        rng: &mut Rng,
        mut draw: impl FnMut(&mut Rng) -> P,
        valid: impl Fn(&P) -> bool,
    ) -> P {
        for _ in 0..10_000 {
            let p = draw(rng);
            if valid(&p) {
                return p;
            }
        }
        panic!("no valid configuration drawn in 10000 tries");
    }

    /// f64 -> f32 (rounding).
    pub fn to_f32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    /// f32 -> f64 (exact).
    pub fn to_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| f64::from(a)).collect()
    }

    /// Rounds every value to f32 precision, so an f32 run and an f64 run see the same inputs.
    pub fn round_f32(v: &[f64]) -> Vec<f64> {
        v.iter().map(|&a| f64::from(a as f32)).collect()
    }

    /// `<a, b>`.
    pub fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KernelError;

    #[test]
    fn same_padding_matches_tf() {
        // TF: in 5, k 3, s 2 -> out 3, total pad (3-1)*2+3-5 = 2 -> (1, 1).
        assert_eq!(same_padding(5, 3, 2, 1), (1, 1));
        // in 6, k 3, s 2 -> out 3, total (2*2+3)-6 = 1 -> extra cell after.
        assert_eq!(same_padding(6, 3, 2, 1), (0, 1));
        // in 4, k 2, s 1 -> total 1 -> (0, 1).
        assert_eq!(same_padding(4, 2, 1, 1), (0, 1));
        // Dilation 2 makes a 3-tap kernel span 5 cells: in 5, s 1 -> total 4 -> (2, 2).
        assert_eq!(same_padding(5, 3, 1, 2), (2, 2));
        // Stride larger than kernel: no padding needed.
        assert_eq!(same_padding(7, 1, 3, 1), (0, 0));
        assert_eq!(same_padding(5, 3, 0, 1), (0, 0));
        let p = Padding2d::same((6, 5), (3, 3), (2, 2), (1, 1));
        assert_eq!(p, Padding2d::new(0, 1, 1, 1));
    }

    #[test]
    fn same_padding_gives_ceil_output() {
        let mut rng = crate::testutil::rng("same_padding_gives_ceil_output");
        for _ in 0..200 {
            let (input, k, s, d) = (
                rng.range(1, 20),
                rng.range(1, 5),
                rng.range(1, 4),
                rng.range(1, 3),
            );
            let (b, a) = same_padding(input, k, s, d);
            assert!(a == b || a == b + 1);
            let win = Window1d {
                input,
                kernel: k,
                stride: s,
                dilation: d,
                pad_before: b,
                pad_after: a,
            };
            assert_eq!(
                win.out_size("t", Axis::H).unwrap(),
                input.div_ceil(s),
                "{win:?}"
            );
        }
    }

    #[test]
    fn out_size_formula() {
        let win = |input, kernel, stride, dilation, pad_before, pad_after| Window1d {
            input,
            kernel,
            stride,
            dilation,
            pad_before,
            pad_after,
        };
        assert_eq!(win(7, 3, 1, 1, 0, 0).out_size("t", Axis::H), Ok(5));
        assert_eq!(win(7, 3, 2, 1, 0, 0).out_size("t", Axis::H), Ok(3));
        assert_eq!(win(8, 3, 2, 1, 0, 0).out_size("t", Axis::H), Ok(3));
        assert_eq!(win(7, 3, 1, 2, 0, 0).out_size("t", Axis::H), Ok(3));
        assert_eq!(win(7, 3, 1, 1, 1, 2).out_size("t", Axis::H), Ok(8));
        // Window exactly fills the padded input.
        assert_eq!(win(1, 3, 1, 1, 1, 1).out_size("t", Axis::W), Ok(1));
    }

    #[test]
    fn out_size_refusals_name_the_parameter() {
        let ok = Window1d {
            input: 5,
            kernel: 3,
            stride: 1,
            dilation: 1,
            pad_before: 0,
            pad_after: 0,
        };
        let param = |w: Window1d, axis| match w.out_size("t", axis) {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error, got {other:?}"),
        };
        assert_eq!(param(Window1d { input: 0, ..ok }, Axis::H), "h");
        assert_eq!(param(Window1d { kernel: 0, ..ok }, Axis::W), "kw");
        assert_eq!(param(Window1d { stride: 0, ..ok }, Axis::H), "stride_h");
        assert_eq!(param(Window1d { dilation: 0, ..ok }, Axis::W), "dilation_w");
        assert_eq!(param(Window1d { kernel: 6, ..ok }, Axis::H), "kh");
        assert_eq!(
            param(
                Window1d {
                    kernel: 3,
                    dilation: 3,
                    ..ok
                },
                Axis::H
            ),
            "kh"
        );
        assert_eq!(
            param(
                Window1d {
                    pad_before: usize::MAX,
                    ..ok
                },
                Axis::H
            ),
            "padding.top/bottom"
        );
        assert_eq!(
            param(
                Window1d {
                    dilation: usize::MAX,
                    ..ok
                },
                Axis::H
            ),
            "dilation_h"
        );
        assert!(
            Window1d {
                kernel: 6,
                pad_after: 1,
                ..ok
            }
            .out_size("t", Axis::H)
            .is_ok()
        );
    }

    #[test]
    fn input_and_output_index_are_inverse() {
        let mut rng = crate::testutil::rng("input_and_output_index_are_inverse");
        for _ in 0..100 {
            let win = Window1d {
                input: rng.range(1, 9),
                kernel: rng.range(1, 4),
                stride: rng.range(1, 3),
                dilation: rng.range(1, 3),
                pad_before: rng.range(0, 3),
                pad_after: rng.range(0, 3),
            };
            let Some(out) = win.output_len() else {
                continue;
            };
            for o in 0..out {
                for t in 0..win.kernel {
                    if let Some(i) = win.input_index(o, t) {
                        assert_eq!(win.output_index(i, t), Some(o), "{win:?} o={o} t={t}");
                    }
                }
            }
            for i in 0..win.input {
                for t in 0..win.kernel {
                    if let Some(o) = win.output_index(i, t) {
                        assert_eq!(win.input_index(o, t), Some(i));
                    }
                }
            }
        }
    }

    #[test]
    fn taps_are_exactly_the_real_cells() {
        let mut rng = crate::testutil::rng("taps_are_exactly_the_real_cells");
        for _ in 0..300 {
            let win = Window1d {
                input: rng.range(1, 9),
                kernel: rng.range(1, 5),
                stride: rng.range(1, 3),
                dilation: rng.range(1, 4),
                pad_before: rng.range(0, 6),
                pad_after: rng.range(0, 6),
            };
            let Some(out) = win.output_len() else {
                continue;
            };
            let mut any_miss = None;
            for o in 0..out {
                let real: Vec<usize> = (0..win.kernel)
                    .filter(|&t| win.input_index(o, t).is_some())
                    .collect();
                assert_eq!(win.taps(o).collect::<Vec<_>>(), real, "{win:?} o={o}");
                if real.is_empty() && any_miss.is_none() {
                    any_miss = Some(o);
                }
            }
            assert_eq!(win.first_padding_only_window(), any_miss, "{win:?}");
        }
        // A huge kernel over a tiny input costs only the taps that land on it.
        let win = Window1d {
            input: 2,
            kernel: usize::MAX / 4,
            stride: 1,
            dilation: 1,
            pad_before: usize::MAX / 4 - 1,
            pad_after: 0,
        };
        assert_eq!(win.out_size("t", Axis::H), Ok(2));
        assert_eq!(win.taps(0), usize::MAX / 4 - 1..usize::MAX / 4);
        assert_eq!(win.first_padding_only_window(), None);
    }

    #[test]
    fn padding_only_windows_are_detected() {
        // Input 2, kernel 1, pad 2 before: output 0 reads position -2.
        let win = Window2d::new((2, 3), (1, 1), (1, 1), (1, 1), Padding2d::new(2, 0, 0, 0));
        assert!(win.out_hw("t").is_ok());
        assert!(win.require_every_window_hits_input("t").is_err());
        let win = Window2d::new((3, 3), (2, 2), (1, 1), (1, 1), Padding2d::symmetric(1, 1));
        assert!(win.require_every_window_hits_input("t").is_ok());
        // Dilation can skip over the whole input: taps at -1 and +1 around an input of 1
        // both fall in padding.
        let win = Window2d::new((1, 1), (2, 1), (1, 1), (2, 1), Padding2d::new(1, 1, 0, 0));
        assert!(win.require_every_window_hits_input("t").is_err());
        // ...or only from a middle window: taps {-2, 0}, {-1, 1}, {0, 2} around an input of 1.
        let w1 = Window1d {
            input: 1,
            kernel: 2,
            stride: 1,
            dilation: 2,
            pad_before: 2,
            pad_after: 2,
        };
        assert_eq!(w1.first_padding_only_window(), Some(1));
        // Huge inputs are checked in constant time.
        let w1 = Window1d {
            input: usize::MAX / 2,
            kernel: 3,
            stride: 1,
            dilation: 1,
            pad_before: 1,
            pad_after: 1,
        };
        assert_eq!(w1.first_padding_only_window(), None);
    }
}
