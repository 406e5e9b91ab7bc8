//! Shapes, strided layouts, and NumPy-style indexing (integers, ranges with steps, new axes
//! and an ellipsis) resolved into a new layout over the same data.
//!
//! Indexing follows NumPy's basic-indexing rules exactly:
//! * an integer picks one position and removes its axis; negative counts from the end;
//! * a range `start:stop:step` keeps the axis; bounds are clamped as Python's
//!   `slice.indices` does; a negative step walks backwards; a zero step is an error;
//! * a new axis inserts a dimension of size 1 and consumes no input axis;
//! * one ellipsis stands for as many full ranges as needed to use every input axis — possibly
//!   zero of them — counting only integers and ranges, never new axes (the runtime Spore
//!   descends from counted new axes too, so `x[..., None]` lost a dimension: see the
//!   regression tests);
//! * with no ellipsis, missing trailing axes are kept whole.

use crate::error::{Error, Result};

/// The dimensions of a tensor, outermost first (row-major).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape with these dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements, or an error if it overflows `usize`.
    pub fn numel(&self) -> Result<usize> {
        numel(&self.0)
    }

    /// Row-major strides in elements.
    pub fn contiguous_strides(&self) -> Vec<isize> {
        contiguous_strides(&self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Element count of `dims`, refusing overflow.
pub fn numel(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::ShapeMismatch {
            shapes: vec![dims.to_vec()],
            reason: "element count overflows".into(),
        })
}

/// Row-major strides (in elements) of `dims`.
pub fn contiguous_strides(dims: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; dims.len()];
    let mut acc = 1isize;
    for (s, &d) in strides.iter_mut().zip(dims).rev() {
        *s = acc;
        acc = acc.saturating_mul(d as isize);
    }
    strides
}

/// One component of an indexing expression (`x[a, b, ...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceArg {
    /// One position; removes the axis. Negative counts from the end.
    Index(isize),
    /// `start:stop:step`, each bound optional as in Python.
    Range {
        /// First position (default: 0, or the end for a negative step).
        start: Option<isize>,
        /// One past the last position (default: the end, or before 0 for a negative step).
        stop: Option<isize>,
        /// Step, non-zero.
        step: isize,
    },
    /// `None` / `np.newaxis`: inserts an axis of size 1.
    NewAxis,
    /// `...`: as many full ranges as the other components leave unused (maybe none).
    Ellipsis,
}

impl SliceArg {
    /// The full range `:`.
    pub const FULL: SliceArg = SliceArg::Range {
        start: None,
        stop: None,
        step: 1,
    };

    /// `start:stop:step`.
    pub fn range(start: Option<isize>, stop: Option<isize>, step: isize) -> Self {
        SliceArg::Range { start, stop, step }
    }

    fn consumes_axis(&self) -> bool {
        matches!(self, SliceArg::Index(_) | SliceArg::Range { .. })
    }
}

impl From<isize> for SliceArg {
    fn from(i: isize) -> Self {
        SliceArg::Index(i)
    }
}

impl From<i32> for SliceArg {
    fn from(i: i32) -> Self {
        SliceArg::Index(i as isize)
    }
}

impl From<std::ops::Range<isize>> for SliceArg {
    fn from(r: std::ops::Range<isize>) -> Self {
        SliceArg::range(Some(r.start), Some(r.end), 1)
    }
}

impl From<std::ops::RangeFrom<isize>> for SliceArg {
    fn from(r: std::ops::RangeFrom<isize>) -> Self {
        SliceArg::range(Some(r.start), None, 1)
    }
}

impl From<std::ops::RangeTo<isize>> for SliceArg {
    fn from(r: std::ops::RangeTo<isize>) -> Self {
        SliceArg::range(None, Some(r.end), 1)
    }
}

impl From<std::ops::RangeFull> for SliceArg {
    fn from(_: std::ops::RangeFull) -> Self {
        SliceArg::FULL
    }
}

/// Parses a NumPy index expression such as `"0, ..., 1:5:2, None, -1, ::-1"`.
///
/// Accepted components: integers, `start:stop[:step]` with any part empty, `...`, and
/// `None` / `newaxis`. An empty string is the empty index `x[()]`.
pub fn parse_index(expr: &str) -> Result<Vec<SliceArg>> {
    let bad = |reason: String| Error::BadIndex {
        shape: vec![],
        reason,
    };
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Ok(vec![]);
    }
    let parse_int = |s: &str| -> Result<Option<isize>> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<isize>()
            .map(Some)
            .map_err(|_| bad(format!("`{s}` is not an integer")))
    };
    trimmed
        .split(',')
        .map(|part| {
            let p = part.trim();
            match p {
                "..." => Ok(SliceArg::Ellipsis),
                "None" | "newaxis" | "np.newaxis" => Ok(SliceArg::NewAxis),
                "" => Err(bad(format!("empty component in `{expr}`"))),
                _ if p.contains(':') => {
                    let parts: Vec<&str> = p.split(':').collect();
                    if parts.len() > 3 {
                        return Err(bad(format!("`{p}` has more than two colons")));
                    }
                    let start = parse_int(parts[0])?;
                    let stop = parse_int(parts.get(1).copied().unwrap_or(""))?;
                    let step = parse_int(parts.get(2).copied().unwrap_or(""))?.unwrap_or(1);
                    Ok(SliceArg::Range { start, stop, step })
                }
                _ => parse_int(p)?
                    .map(SliceArg::Index)
                    .ok_or_else(|| bad(format!("empty component in `{expr}`"))),
            }
        })
        .collect()
}

/// A strided window onto a flat buffer: shape, per-axis strides and the offset of the first
/// element, all in elements. Strides may be negative (reversed ranges) or zero (new axes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Dimensions of the view.
    pub dims: Vec<usize>,
    /// Step in elements between neighbours along each axis.
    pub strides: Vec<isize>,
    /// Position of element `[0, 0, ...]` in the buffer.
    pub offset: usize,
}

impl Layout {
    /// The row-major layout of a contiguous tensor of `dims`.
    pub fn contiguous(dims: &[usize]) -> Self {
        Layout {
            dims: dims.to_vec(),
            strides: contiguous_strides(dims),
            offset: 0,
        }
    }

    /// Applies a NumPy basic-indexing expression, giving the layout of the result.
    pub fn slice(&self, args: &[SliceArg]) -> Result<Layout> {
        let bad = |reason: String| Error::BadIndex {
            shape: self.dims.clone(),
            reason,
        };
        let ellipses = args
            .iter()
            .filter(|a| matches!(a, SliceArg::Ellipsis))
            .count();
        if ellipses > 1 {
            return Err(bad(
                "an index can only have a single ellipsis ('...')".into()
            ));
        }
        let consuming = args.iter().filter(|a| a.consumes_axis()).count();
        let rank = self.dims.len();
        if consuming > rank {
            return Err(bad(format!(
                "too many indices: tensor is {rank}-dimensional, but {consuming} were indexed"
            )));
        }
        // The ellipsis (explicit, or implied at the end) covers the axes nobody else uses.
        let covered_by_ellipsis = rank - consuming;

        let mut out = Layout {
            dims: vec![],
            strides: vec![],
            offset: self.offset,
        };
        let mut offset = self.offset as isize;
        let mut axis = 0usize;
        let keep_whole = |out: &mut Layout, axis: &mut usize, n: usize| {
            for _ in 0..n {
                out.dims.push(self.dims[*axis]);
                out.strides.push(self.strides[*axis]);
                *axis += 1;
            }
        };
        for arg in args {
            match *arg {
                SliceArg::Ellipsis => keep_whole(&mut out, &mut axis, covered_by_ellipsis),
                SliceArg::NewAxis => {
                    out.dims.push(1);
                    out.strides.push(0);
                }
                SliceArg::Index(i) => {
                    let size = self.dims[axis];
                    let pos = if i < 0 { i + size as isize } else { i };
                    if pos < 0 || pos >= size as isize {
                        return Err(Error::OutOfRange {
                            index: i as i64,
                            axis,
                            size,
                        });
                    }
                    offset += pos * self.strides[axis];
                    axis += 1;
                }
                SliceArg::Range { start, stop, step } => {
                    if step == 0 {
                        return Err(bad(format!("slice step cannot be zero (axis {axis})")));
                    }
                    let size = self.dims[axis] as isize;
                    let (first, len) = resolve_range(size, start, stop, step);
                    if len > 0 {
                        offset += first * self.strides[axis];
                    }
                    out.dims.push(len as usize);
                    out.strides.push(self.strides[axis] * step);
                    axis += 1;
                }
            }
        }
        if ellipses == 0 {
            let rest = rank - axis;
            keep_whole(&mut out, &mut axis, rest);
        }
        out.offset = usize::try_from(offset).map_err(|_| bad("negative offset".into()))?;
        Ok(out)
    }

    /// Number of elements in the view.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Buffer positions of every element, in row-major order of the view.
    pub fn offsets(&self) -> Vec<usize> {
        let n = self.numel();
        let mut result = Vec::with_capacity(n);
        if n == 0 {
            return result;
        }
        let rank = self.dims.len();
        let mut idx = vec![0usize; rank];
        let mut pos = self.offset as isize;
        loop {
            result.push(pos as usize);
            // Odometer increment, innermost axis first.
            let mut ax = rank;
            loop {
                if ax == 0 {
                    return result;
                }
                ax -= 1;
                idx[ax] += 1;
                pos += self.strides[ax];
                if idx[ax] < self.dims[ax] {
                    break;
                }
                pos -= self.strides[ax] * self.dims[ax] as isize;
                idx[ax] = 0;
            }
        }
    }

    /// Buffer position of the element at `index`, or an error naming the bad axis.
    pub fn offset_of(&self, index: &[usize]) -> Result<usize> {
        if index.len() != self.dims.len() {
            return Err(Error::BadIndex {
                shape: self.dims.clone(),
                reason: format!(
                    "{} indices for a {}-dimensional view",
                    index.len(),
                    self.dims.len()
                ),
            });
        }
        let mut pos = self.offset as isize;
        for (axis, ((&i, &d), &s)) in index.iter().zip(&self.dims).zip(&self.strides).enumerate() {
            if i >= d {
                return Err(Error::OutOfRange {
                    index: i as i64,
                    axis,
                    size: d,
                });
            }
            pos += i as isize * s;
        }
        Ok(pos as usize)
    }
}

/// Python's `slice(start, stop, step).indices(size)`, returning the first position and the
/// number of elements.
fn resolve_range(
    size: isize,
    start: Option<isize>,
    stop: Option<isize>,
    step: isize,
) -> (isize, isize) {
    let (lower, upper) = if step > 0 { (0, size) } else { (-1, size - 1) };
    let clamp = |v: Option<isize>, default: isize| match v {
        None => default,
        Some(v) if v < 0 => (v + size).max(lower),
        Some(v) => v.min(upper),
    };
    let first = clamp(start, if step > 0 { lower } else { upper });
    let end = clamp(stop, if step > 0 { upper } else { lower });
    let len = if step > 0 {
        if end > first {
            (end - first + step - 1) / step
        } else {
            0
        }
    } else if first > end {
        (first - end + (-step) - 1) / (-step)
    } else {
        0
    };
    (first, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sl(dims: &[usize], expr: &str) -> Result<Layout> {
        Layout::contiguous(dims).slice(&parse_index(expr)?)
    }

    #[test]
    fn python_slice_indices() {
        // Values checked against CPython's slice(...).indices(n) and len(range(...)).
        assert_eq!(resolve_range(10, None, None, 1), (0, 10));
        assert_eq!(resolve_range(10, Some(2), Some(8), 3), (2, 2));
        assert_eq!(resolve_range(10, None, None, -1), (9, 10));
        assert_eq!(resolve_range(10, Some(-3), None, 1), (7, 3));
        assert_eq!(resolve_range(10, Some(8), Some(2), -2), (8, 3));
        assert_eq!(resolve_range(10, Some(-100), Some(100), 1), (0, 10));
        assert_eq!(resolve_range(10, Some(100), Some(-100), -1), (9, 10));
        assert_eq!(resolve_range(10, Some(5), Some(5), 1), (5, 0));
        assert_eq!(resolve_range(0, None, None, -1), (-1, 0));
        assert_eq!(resolve_range(5, Some(3), Some(1), 1).1, 0);
    }

    #[test]
    fn parse_numpy_syntax() {
        let args = parse_index("0, ..., 1:5:2, None, -1, ::-1, :").unwrap();
        assert_eq!(
            args,
            vec![
                SliceArg::Index(0),
                SliceArg::Ellipsis,
                SliceArg::range(Some(1), Some(5), 2),
                SliceArg::NewAxis,
                SliceArg::Index(-1),
                SliceArg::range(None, None, -1),
                SliceArg::FULL,
            ]
        );
        assert!(parse_index("1:2:3:4").is_err());
        assert!(parse_index("a").is_err());
        assert!(parse_index("1,,2").is_err());
        assert_eq!(parse_index("").unwrap(), vec![]);
    }

    #[test]
    fn offsets_walk_row_major() {
        let l = Layout::contiguous(&[2, 3]);
        assert_eq!(l.offsets(), vec![0, 1, 2, 3, 4, 5]);
        let t = l
            .slice(&[SliceArg::FULL, SliceArg::range(None, None, -1)])
            .unwrap();
        assert_eq!(t.offsets(), vec![2, 1, 0, 5, 4, 3]);
        assert_eq!(
            sl(&[4, 0, 3], "...").unwrap().offsets(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn errors_not_panics() {
        assert!(matches!(
            sl(&[2, 3], "..., ..."),
            Err(Error::BadIndex { .. })
        ));
        assert!(matches!(
            sl(&[2, 3], "0, 0, 0"),
            Err(Error::BadIndex { .. })
        ));
        assert!(matches!(
            sl(&[2, 3], "2"),
            Err(Error::OutOfRange {
                index: 2,
                axis: 0,
                size: 2
            })
        ));
        assert!(matches!(sl(&[2, 3], "-3"), Err(Error::OutOfRange { .. })));
        assert!(matches!(
            sl(&[2, 3], ":, 3"),
            Err(Error::OutOfRange { axis: 1, .. })
        ));
        assert!(matches!(sl(&[2, 3], "::0"), Err(Error::BadIndex { .. })));
        assert!(matches!(sl(&[], "0"), Err(Error::BadIndex { .. })));
        let e = sl(&[2, 3], "5").unwrap_err();
        assert_eq!(e.code().as_i32(), -100);
    }
}
