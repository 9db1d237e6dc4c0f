//! The hand-written shift, product and BatchNorm kernels against Candle's generic operations,
//! values and gradients.

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

/// BatchNorm with batch statistics from Candle's generic operations, as the reference.
fn reference_batch_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Tensor {
    let mean = x.mean_keepdim(0).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(0).unwrap();
    let scale = (var + 1e-5).unwrap().sqrt().unwrap().recip().unwrap().broadcast_mul(&weight.unsqueeze(0).unwrap()).unwrap();
    let y = centred.broadcast_mul(&scale).unwrap().broadcast_add(&bias.unsqueeze(0).unwrap()).unwrap();
    if relu {
        y.relu().unwrap()
    } else {
        y
    }
}

#[test]
fn fused_batch_norm_matches_generic() {
    use ssa::layers::{BatchNorm, WeightSource};
    let (rows, channels) = (300, 7);
    for relu in [false, true] {
        let bn = BatchNorm::new("bn", channels, &mut WeightSource::init(0, &Device::Cpu)).unwrap();
        bn.weight.set(&(ramp(&[channels], 1.0) + 1.5).unwrap()).unwrap();
        bn.bias.set(&ramp(&[channels], 0.5)).unwrap();
        // Channels with different means and scales, so the statistics matter.
        let x = Var::from_tensor(&(ramp(&[rows, channels], 3.0) + 0.8).unwrap()).unwrap();
        let weights = ramp(&[rows, channels], 2.0);

        let fused = bn.forward_with_relu(x.as_tensor(), true, relu).unwrap();
        let reference = reference_batch_norm(x.as_tensor(), bn.weight.as_tensor(), bn.bias.as_tensor(), relu);
        assert!(max_abs_diff(&fused, &reference) < 1e-5, "relu {relu}");

        let fused_grads = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let reference_grads = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("x", &x), ("weight", &bn.weight), ("bias", &bn.bias)] {
            let expected = reference_grads.get(var).unwrap();
            let scale: f32 = expected.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            let diff = max_abs_diff(fused_grads.get(var).unwrap(), expected);
            assert!(diff < 1e-4 * scale.max(1.0), "relu {relu}, gradient of {name}: {diff}");
        }
    }
}

#[test]
fn fused_batch_norm_updates_running_statistics() {
    use ssa::layers::{BatchNorm, WeightSource};
    let bn = BatchNorm::new("bn", 3, &mut WeightSource::init(0, &Device::Cpu)).unwrap();
    let x = (ramp(&[40, 3], 2.0) + 1.0).unwrap();
    bn.forward(&x, true).unwrap();
    let mean = x.mean(0).unwrap();
    let unbiased = (x.broadcast_sub(&mean).unwrap().sqr().unwrap().sum(0).unwrap() / 39.0).unwrap();
    let expected_mean = (mean * 0.1).unwrap();
    let expected_var = ((unbiased * 0.1).unwrap() + 0.9).unwrap();
    assert!(max_abs_diff(bn.running_mean.as_tensor(), &expected_mean) < 1e-6);
    assert!(max_abs_diff(bn.running_var.as_tensor(), &expected_var) < 1e-5);
}

#[test]
fn max_pool_matches_generic_without_ties() {
    use ssa::layers::ops::{generic_max_pool2, max_pool2};
    let x = Var::from_tensor(&ramp(&[2, 6, 4, 5], 1.0)).unwrap();
    let weights = ramp(&[2, 3, 2, 5], 2.0);
    let fast = max_pool2(x.as_tensor()).unwrap();
    let generic = generic_max_pool2(x.as_tensor()).unwrap();
    assert_eq!(max_abs_diff(&fast, &generic), 0.0);

    let fast_grad = (fast * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let generic_grad = (generic * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(max_abs_diff(fast_grad.get(&x).unwrap(), generic_grad.get(&x).unwrap()), 0.0);
}

#[test]
fn max_pool_gradient_goes_to_one_tied_maximum() {
    use ssa::layers::ops::max_pool2;
    let x = Var::from_tensor(&Tensor::zeros((1, 2, 2, 1), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let grads = max_pool2(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let grad: Vec<f32> = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(grad, vec![1.0, 0.0, 0.0, 0.0]);
}
