//! The training curves as a PNG (`spore train` writes `curves.png` after every epoch): the
//! training loss (running mean every few steps) and the test loss per epoch on the left, the
//! test accuracy per epoch on the right. Drawn with `plotters` on a bitmap; text uses an
//! embedded DejaVu Sans (the `dejavu` crate), so no system fonts are needed.

use plotters::prelude::*;
use spore::{Error, Result};
use std::path::Path;
use std::sync::Once;

/// The points of the curves.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    /// `(epoch as a fraction, mean training loss over the last few steps)`.
    pub train_loss: Vec<(f64, f64)>,
    /// `(epoch, test loss)`.
    pub test_loss: Vec<(f64, f64)>,
    /// `(epoch, test accuracy in %)`.
    pub test_accuracy: Vec<(f64, f64)>,
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid_param("curves", format!("cannot draw {}: {e}", path.display()))
}

/// Registers the embedded font once per process.
fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            result = Err(Error::invalid_param(
                "font",
                "the embedded DejaVu Sans did not load",
            ));
        }
    });
    result
}

/// `(min, max)` of `values` widened so a flat series still gets a visible range.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// Writes `curves` to `path` as a 1200x450 PNG.
pub fn write_png(path: &Path, curves: &Curves, epochs: usize) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(600);
    let x_max = epochs.max(1) as f64;

    let (lo, hi) = range(
        curves
            .train_loss
            .iter()
            .chain(&curves.test_loss)
            .map(|&(_, l)| l),
    );
    let mut chart = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, lo.max(0.0)..hi)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("cross-entropy")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(LineSeries::new(curves.train_loss.iter().copied(), &BLUE))
        .map_err(|e| plot_err(path, e))?
        .label("training (running mean)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            curves.test_loss.iter().copied(),
            RED.stroke_width(2),
        ))
        .map_err(|e| plot_err(path, e))?
        .label("test")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(
            curves
                .test_loss
                .iter()
                .map(|&p| Circle::new(p, 4, RED.filled())),
        )
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;

    let (lo, hi) = range(curves.test_accuracy.iter().map(|&(_, a)| a));
    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, lo.max(0.0)..hi.min(100.5))
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("%")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(LineSeries::new(
            curves.test_accuracy.iter().copied(),
            GREEN.stroke_width(2),
        ))
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(
            curves
                .test_accuracy
                .iter()
                .map(|&p| Circle::new(p, 4, GREEN.filled())),
        )
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("spore-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curves.png");
        let curves = Curves {
            train_loss: (0..50)
                .map(|i| (i as f64 / 10.0, 2.3 / (1.0 + i as f64)))
                .collect(),
            test_loss: (1..=5).map(|e| (e as f64, 0.5 / e as f64)).collect(),
            test_accuracy: (1..=5).map(|e| (e as f64, 90.0 + e as f64)).collect(),
        };
        write_png(&path, &curves, 5).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
