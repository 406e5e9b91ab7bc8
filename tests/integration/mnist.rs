//! The bundled MNIST digits load, have the documented sizes and look like digits.

use spore::data::mnist;

#[test]
fn bundled_digits_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/data/mnist-10k");
    let m = mnist::load(dir).unwrap();
    assert_eq!(m.train.images.dims(), &[8000, 28, 28]);
    assert_eq!(m.test.images.dims(), &[2000, 28, 28]);
    assert_eq!(m.train.len(), 8000);
    assert_eq!(m.test.len(), 2000);
    // Every class is present, roughly balanced (MNIST has 9-11% per class).
    let mut counts = [0usize; 10];
    for &l in m.train.labels.as_slice::<u8>().unwrap() {
        counts[l as usize] += 1;
    }
    for (digit, &c) in counts.iter().enumerate() {
        assert!((600..=1000).contains(&c), "digit {digit}: {c} of 8000");
    }
    // Digits are dark strokes on a zero background: ~19% of MNIST pixels are non-zero.
    let px = m.train.images.as_slice::<u8>().unwrap();
    let nonzero = px.iter().filter(|&&p| p > 0).count() as f64 / px.len() as f64;
    assert!(
        (0.12..0.26).contains(&nonzero),
        "non-zero fraction {nonzero}"
    );
    // The corner pixel of every image is background.
    let corner = m
        .train
        .images
        .slice_str(":, 0, 0")
        .unwrap()
        .to_vec::<u8>()
        .unwrap();
    assert!(corner.iter().all(|&p| p == 0));
}

#[test]
fn missing_directory_is_an_error() {
    let e = mnist::load("/nonexistent/mnist").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/mnist"));
}
