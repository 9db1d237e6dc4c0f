//! The SVD layers against their dense definitions, and the gradients of the local loss.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssa::layers::param::FactorTensors;
use ssa::layers::{Pass, SvdConv2d, SvdFactors, SvdLinear};
use ssa::linalg::{thin_svd, Matrix};
use ssa::rng::normal_vec;
use ssa::ssa::stiefel::project_tangent;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn factors_of(name: &str, shape: Vec<usize>, matrix: &Matrix, device: &Device) -> SvdFactors {
    let svd = thin_svd(matrix).unwrap();
    let rank = svd.s.len();
    let u = svd.u.to_tensor(device).unwrap();
    let v = svd.v.to_tensor(device).unwrap();
    let tensors = FactorTensors {
        s: Tensor::from_vec(svd.s, rank, device).unwrap(),
        u_b: u.clone(),
        v_b: v.clone(),
        u,
        v,
    };
    SvdFactors::new(name, shape, tensors).unwrap()
}

/// Builds a conv pair from the dense kernel `[F, C, k, k]`, at full rank.
fn conv_pair(kernel: &Tensor, bias: &Tensor, stride: usize) -> SvdConv2d {
    let (f, c, k, _) = kernel.dims4().unwrap();
    // M[c·k + i, f·k + j] = K[f, c, i, j]
    let m = kernel.permute((1, 2, 0, 3)).unwrap().reshape((c * k, f * k)).unwrap();
    let matrix = Matrix::from_tensor(&m).unwrap();
    SvdConv2d {
        factors: factors_of("conv", vec![f, c, k, k], &matrix, &Device::Cpu),
        bias: Var::from_tensor(bias).unwrap(),
        in_channels: c,
        out_channels: f,
        kernel: k,
        stride,
        padding: k / 2,
    }
}

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(normal_vec(rng, len), shape, &Device::Cpu).unwrap()
}

#[test]
fn conv_pair_matches_dense_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (c, f, k, stride, side) in [(3, 8, 3, 1, 9), (6, 4, 3, 2, 8), (5, 7, 5, 1, 7), (4, 6, 1, 2, 6)] {
        let kernel = random(&mut rng, &[f, c, k, k]);
        let bias = random(&mut rng, &[f]);
        let x = random(&mut rng, &[2, side, side, c]);
        let pair = conv_pair(&kernel, &bias, stride);
        assert_eq!(pair.factors.rank(), (c * k).min(f * k));

        let got = pair.forward(&x, &Pass::default()).unwrap();
        let nchw = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let expected = nchw
            .conv2d(&kernel, k / 2, stride, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, f, 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert_eq!(got.dims(), expected.dims(), "c={c} f={f} k={k} stride={stride}");
        let error = max_abs_diff(&got, &expected);
        assert!(error < 1e-4, "c={c} f={f} k={k} stride={stride}: max error {error}");
    }
}

#[test]
fn conv_pair_dense_kernel_round_trips() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let kernel = random(&mut rng, &[5, 4, 3, 3]);
    let pair = conv_pair(&kernel, &random(&mut rng, &[5]), 1);
    let error = max_abs_diff(&pair.dense_kernel().unwrap(), &kernel);
    assert!(error < 1e-4, "max error {error}");
}

#[test]
fn linear_matches_dense_product() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w = random(&mut rng, &[6, 9]);
    let bias = random(&mut rng, &[6]);
    let layer = SvdLinear {
        factors: factors_of("fc", vec![6, 9], &Matrix::from_tensor(&w).unwrap(), &Device::Cpu),
        bias: Var::from_tensor(&bias).unwrap(),
        in_features: 9,
        out_features: 6,
    };
    let x = random(&mut rng, &[4, 9]);
    let expected = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&bias).unwrap();
    let error = max_abs_diff(&layer.forward(&x, &Pass::default()).unwrap(), &expected);
    assert!(error < 1e-4, "max error {error}");
}

/// Autograd on the broadcast-error surrogate gives ∂U = G_W V diag(s), ∂V = G_Wᵀ U diag(s) and
/// ∂s = diag(Uᵀ G_W V), where G_W is the gradient of the same loss for the dense weight.
#[test]
fn factor_gradients_match_closed_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (m, n, batch) = (5, 7, 3);
    let w = random(&mut rng, &[m, n]);
    let layer = SvdLinear {
        factors: factors_of("fc", vec![m, n], &Matrix::from_tensor(&w).unwrap(), &Device::Cpu),
        bias: Var::from_tensor(&random(&mut rng, &[m])).unwrap(),
        in_features: n,
        out_features: m,
    };
    let x = random(&mut rng, &[batch, n]);
    let signal = random(&mut rng, &[batch, m]);

    let surrogate = |out: &Tensor| (out * &signal).unwrap().sum_all().unwrap() / batch as f64;
    let grads = surrogate(&layer.forward(&x, &Pass::default()).unwrap()).unwrap().backward().unwrap();
    let f = &layer.factors;
    let grad_u = grads.get(&f.u).unwrap();
    let grad_s = grads.get(&f.s).unwrap();
    let grad_v = grads.get(&f.v).unwrap();

    let dense = Var::from_tensor(&f.dense().unwrap()).unwrap();
    let dense_out = x.matmul(&dense.t().unwrap()).unwrap();
    let dense_grads = surrogate(&dense_out).unwrap().backward().unwrap();
    let g_w = dense_grads.get(&dense).unwrap();

    let s_diag = f.s.unsqueeze(0).unwrap();
    let expected_u = g_w.matmul(f.v.as_tensor()).unwrap().broadcast_mul(&s_diag).unwrap();
    let expected_v = g_w.t().unwrap().matmul(f.u.as_tensor()).unwrap().broadcast_mul(&s_diag).unwrap();
    let projected = f.u.t().unwrap().matmul(g_w).unwrap().matmul(f.v.as_tensor()).unwrap();
    let eye = Tensor::eye(projected.dim(0).unwrap(), candle_core::DType::F32, &Device::Cpu).unwrap();
    let expected_s = (projected * eye).unwrap().sum(1).unwrap();

    assert!(max_abs_diff(grad_u, &expected_u) < 1e-4, "∂U differs");
    assert!(max_abs_diff(grad_v, &expected_v) < 1e-4, "∂V differs");
    assert!(max_abs_diff(grad_s, &expected_s) < 1e-4, "∂s differs");
}

#[test]
fn projected_gradient_is_tangent() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = ssa::linalg::orthonormalize(&Matrix::new(8, 3, normal_vec(&mut rng, 24)));
    let u = q.to_tensor(&Device::Cpu).unwrap();
    let g = random(&mut rng, &[8, 3]);
    let p = project_tangent(&u, &g).unwrap();
    // The tangent space at U is {G : UᵀG + GᵀU = 0}.
    let a = u.t().unwrap().matmul(&p).unwrap();
    let skew = (&a + a.t().unwrap()).unwrap();
    let zero = skew.zeros_like().unwrap();
    assert!(max_abs_diff(&skew, &zero) < 1e-5, "UᵀG + GᵀU is not zero");
    // Projecting twice changes nothing.
    let again = project_tangent(&u, &p).unwrap();
    assert!(max_abs_diff(&again, &p) < 1e-5, "projection is not idempotent");
}

#[test]
fn closed_form_factor_terms_match_autograd() {
    use ssa::ssa::losses::{alignment, factor_terms, orthogonality, Alignment};
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (rows, cols, rank) = (12, 9, 5);
    // Factors away from orthonormal, and targets away from the factors, so every term counts.
    let tensors = FactorTensors {
        u: random(&mut rng, &[rows, rank]),
        s: random(&mut rng, &[rank]),
        v: random(&mut rng, &[cols, rank]),
        u_b: random(&mut rng, &[rows, rank]),
        v_b: random(&mut rng, &[cols, rank]),
    };
    let factors = SvdFactors::new("layer", vec![cols, rows], tensors).unwrap();
    let (beta, gamma) = (0.3, 0.7);
    for form in [Some(Alignment::Factor), Some(Alignment::Subspace), None] {
        let align = match form {
            Some(form) => alignment(&factors, form).unwrap(),
            None => Tensor::new(0f32, &Device::Cpu).unwrap(),
        };
        let orth = orthogonality(&factors).unwrap();
        let loss = ((&align * beta).unwrap() + (&orth * gamma).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let terms = factor_terms(&factors, form, beta, gamma).unwrap();
        for (var, closed) in [(&factors.u, &terms.grad_u), (&factors.v, &terms.grad_v)] {
            let reference = grads.get(var).unwrap();
            let scale: f32 = reference.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            let diff = max_abs_diff(reference, closed);
            assert!(diff < 1e-4 * scale.max(1.0), "{form:?}: {diff} against {scale}");
        }
        assert!(max_abs_diff(&align, &terms.alignment) < 1e-3, "{form:?}");
        assert!(max_abs_diff(&orth, &terms.orthogonality) < 1e-4, "{form:?}");
    }
}
