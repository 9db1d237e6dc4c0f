//! The hand-written shift and product kernels against Candle's generic operations, values and
//! gradients.

use candle_core::{Device, Tensor, Var};
use ssa::layers::ops::{generic_shifted_columns, product, shifted_columns};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Deterministic values that differ at every position, so a misplaced copy shows.
fn ramp(shape: &[usize], scale: f64) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|i| ((i as f64 * 0.7311).sin() * scale) as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Every axis, window, padding and stride that the models use, on odd sizes.
const CASES: [(usize, usize, usize, usize); 8] = [
    // (dim, k, padding, stride)
    (1, 3, 1, 1),
    (2, 3, 1, 1),
    (1, 3, 1, 2),
    (2, 3, 1, 2),
    (1, 5, 0, 1),
    (2, 5, 0, 1),
    (1, 1, 0, 2),
    (2, 5, 2, 1),
];

#[test]
fn shift_kernel_matches_generic_copies() {
    let x = ramp(&[3, 7, 6, 5], 1.0);
    for (dim, k, padding, stride) in CASES {
        let fast = shifted_columns(&x, dim, k, padding, stride).unwrap();
        let generic = generic_shifted_columns(&x, dim, k, padding, stride).unwrap();
        assert_eq!(fast.dims(), generic.dims(), "dim {dim} k {k} padding {padding} stride {stride}");
        assert_eq!(max_abs_diff(&fast, &generic), 0.0, "dim {dim} k {k} padding {padding} stride {stride}");
    }
}

#[test]
fn shift_kernel_gradient_matches_generic_gradient() {
    for (dim, k, padding, stride) in CASES {
        let x = Var::from_tensor(&ramp(&[2, 7, 6, 4], 1.0)).unwrap();
        let probe_shape = generic_shifted_columns(&x, dim, k, padding, stride).unwrap().dims().to_vec();
        let weights = ramp(&probe_shape, 2.0);
        let grad = |shift: fn(&Tensor, usize, usize, usize, usize) -> candle_core::Result<Tensor>| {
            let y = shift(x.as_tensor(), dim, k, padding, stride).unwrap();
            let loss = (y * &weights).unwrap().sum_all().unwrap();
            loss.backward().unwrap().get(&x).unwrap().clone()
        };
        let fast = grad(shifted_columns);
        let generic = grad(generic_shifted_columns);
        let scale: f32 = generic.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(scale > 0.0);
        let diff = max_abs_diff(&fast, &generic);
        assert!(diff <= 1e-6 * scale, "dim {dim} k {k} padding {padding} stride {stride}: {diff}");
    }
}

#[test]
fn second_shift_gradient_runs_through_the_adjoint() {
    // Shift of a shift, as in the dense convolution: the inner gradient passes the outer adjoint.
    let x = Var::from_tensor(&ramp(&[2, 5, 5, 3], 1.0)).unwrap();
    let grad = |shift: fn(&Tensor, usize, usize, usize, usize) -> candle_core::Result<Tensor>| {
        let cols = shift(x.as_tensor(), 2, 3, 1, 1).unwrap();
        let patches = shift(&cols, 1, 3, 1, 1).unwrap();
        let loss = patches.sqr().unwrap().sum_all().unwrap();
        loss.backward().unwrap().get(&x).unwrap().clone()
    };
    let diff = max_abs_diff(&grad(shifted_columns), &grad(generic_shifted_columns));
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn product_gradients_match_matmul() {
    let a = Var::from_tensor(&ramp(&[9, 4], 1.0)).unwrap();
    let b = Var::from_tensor(&ramp(&[4, 6], 0.5)).unwrap();
    let weights = ramp(&[9, 6], 3.0);
    let ours = (product(&a, &b).unwrap() * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let reference = (a.matmul(&b).unwrap() * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    for var in [&a, &b] {
        let diff = max_abs_diff(ours.get(var).unwrap(), reference.get(var).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }
    assert_eq!(max_abs_diff(&product(&a, &b).unwrap(), &a.matmul(&b).unwrap()), 0.0);
}

#[test]
fn product_skips_the_gradient_of_a_detached_operand() {
    let a = Var::from_tensor(&ramp(&[9, 4], 1.0)).unwrap();
    let b = Var::from_tensor(&ramp(&[4, 6], 0.5)).unwrap();
    let detached = a.as_tensor().detach();
    let grads = product(&detached, &b).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&detached).is_none(), "the detached operand got a gradient");
    let expected = detached.t().unwrap().matmul(&Tensor::ones((9, 6), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert!(max_abs_diff(grads.get(&b).unwrap(), &expected) < 1e-5);
}
