//! Options of one forward pass: training or inference, and what the learning rule inserts.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

/// Options of one forward pass, shared by every layer of the network.
#[derive(Clone, Copy, Default)]
pub struct Pass<'a> {
    /// BatchNorm uses batch statistics (and updates its running ones) when true.
    pub train: bool,
    /// Feedback matrices by layer name, in the layer's weight layout. A layer with an entry
    /// computes `f(x_d; W) + f(x; B) − f(x; B)_d` (`_d`: detached): the output is `f(x; W)`,
    /// the weight gradient is the true one, and the gradient sent to the input goes through B
    /// instead of W (feedback alignment).
    pub feedback: Option<&'a HashMap<String, Tensor>>,
    /// Zero matrices by layer name, in the layer's dense view. A layer with an entry adds
    /// `f(x; Z)` to its output, so the gradient of Z is the loss gradient with respect to the
    /// layer's dense weight (the diagnostics' BP reference).
    pub probe: Option<&'a HashMap<String, Var>>,
}

impl<'a> Pass<'a> {
    /// Returns a plain pass, with nothing inserted.
    pub fn plain(train: bool) -> Self {
        Self {
            train,
            ..Self::default()
        }
    }

    /// Feedback matrix of layer `name`, if the pass has one.
    pub fn feedback_for(&self, name: &str) -> Option<&'a Tensor> {
        self.feedback.and_then(|map| map.get(name))
    }

    /// Probe matrix of layer `name`, if the pass has one.
    pub fn probe_for(&self, name: &str) -> Option<&'a Var> {
        self.probe.and_then(|map| map.get(name))
    }
}

/// Applies `f` with weight `w`, or with the feedback-alignment substitution when `b` is given:
/// `f(x_d; w) + f(x; b) − f(x; b)_d`.
pub fn with_feedback(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    match b {
        None => f(x, w),
        Some(b) => {
            // B is a constant: no gradient may reach whatever it was computed from.
            let through_b = f(x, &b.detach())?;
            let forward = f(&x.detach(), w)?;
            forward + (&through_b - through_b.detach())?
        }
    }
}
