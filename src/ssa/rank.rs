//! The hybrid rank schedule and rank truncation.
//!
//! A linear phase moves each layer from full rank to the budget rank. An energy phase then keeps
//! the smallest rank whose singular values contain a share of `Σ s²`. Truncation applies a new
//! rank to the factors, the feedback factors and Adam's moments together.

use candle_core::{Tensor, Var};

use crate::config::RankConfig;
use crate::error::Result;
use crate::layers::SvdFactors;
use crate::optim::Adam;

/// Rank limits of one layer with a `rows × cols` matrix view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankBounds {
    /// `min(rows, cols)`.
    pub full: usize,
    /// `floor(rows·cols / (rows + cols))`: the factors hold no more numbers than the dense matrix.
    pub budget: usize,
    /// `ceil(min_fraction · full)`: going lower destabilises training.
    pub floor: usize,
}

impl RankBounds {
    /// Computes the bounds of a `rows × cols` layer.
    pub fn new(rows: usize, cols: usize, min_fraction: f64) -> Self {
        let full = rows.min(cols);
        let floor = ((min_fraction * full as f64).ceil() as usize).clamp(1, full);
        Self {
            full,
            budget: rows * cols / (rows + cols),
            floor,
        }
    }

    /// Rank at the end of the linear phase: `max(budget, floor)`.
    pub fn linear_target(&self) -> usize {
        self.budget.max(self.floor)
    }
}

/// Rank change at the end of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankEvent {
    /// Event `index` (from 1) of `count` in the linear phase.
    Linear { index: usize, count: usize },
    /// An event of the energy phase.
    Energy,
}

/// Epochs (counted from 1) of the linear phase: the first `ceil(phase1_fraction · epochs)`.
pub fn phase1_epochs(config: &RankConfig, epochs: usize) -> usize {
    ((config.phase1_fraction * epochs as f64).ceil() as usize).clamp(1, epochs.max(1))
}

/// Epoch ends (from 1) at which the ranks change, with the event of each.
///
/// With `epochs ≥ prune_every`, events fall every `prune_every` epochs plus the last epoch of
/// the linear phase. Shorter runs prune at every epoch end, so that a run of two epochs still
/// has one linear event (straight to the budget rank) and one energy event.
pub fn events(config: &RankConfig, epochs: usize) -> Vec<(usize, RankEvent)> {
    if config.schedule == "none" || epochs == 0 {
        return Vec::new();
    }
    let phase1 = phase1_epochs(config, epochs);
    let every = if epochs < config.prune_every { 1 } else { config.prune_every };
    let mut linear: Vec<usize> = (1..=phase1).filter(|e| e % every == 0).collect();
    if linear.last() != Some(&phase1) {
        linear.push(phase1);
    }
    let count = linear.len();
    let mut all: Vec<(usize, RankEvent)> = linear
        .into_iter()
        .enumerate()
        .map(|(i, epoch)| (epoch, RankEvent::Linear { index: i + 1, count }))
        .collect();
    all.extend(((phase1 + 1)..=epochs).filter(|e| e % every == 0).map(|e| (e, RankEvent::Energy)));
    all
}

/// Rank of linear event `index` of `count`: from `full` towards the linear target in equal steps.
pub fn linear_rank(bounds: &RankBounds, index: usize, count: usize) -> usize {
    let drop = (bounds.full - bounds.linear_target()) as f64 * index as f64 / count.max(1) as f64;
    bounds.full - drop.round() as usize
}

/// Returns the smallest count of the largest |s_i| whose squares sum to `energy` of `Σ s²`,
/// clamped to `[floor, current]`.
pub fn energy_rank(s: &[f32], energy: f64, floor: usize, current: usize) -> usize {
    let mut squares: Vec<f64> = s.iter().map(|&x| (x as f64).powi(2)).collect();
    squares.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = squares.iter().sum();
    let mut kept = 0.0;
    let mut rank = squares.len();
    for (i, square) in squares.iter().enumerate() {
        kept += square;
        if kept >= energy * total {
            rank = i + 1;
            break;
        }
    }
    rank.clamp(floor.min(current), current)
}

/// Indices of the `keep` entries of `s` with the largest |s|, in their original order.
fn top_indices(s: &[f32], keep: usize) -> Vec<u32> {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].abs().total_cmp(&s[a].abs()));
    let mut indices: Vec<u32> = order[..keep].iter().map(|&i| i as u32).collect();
    indices.sort_unstable();
    indices
}

/// Truncates `factors` to rank `keep`, keeping the components with the largest |s|: the
/// matching columns of U, V, U_B, V_B, entries of s, and the same slices of Adam's moments.
pub fn truncate(factors: &mut SvdFactors, keep: usize, optimizer: &mut Adam) -> Result<()> {
    let rank = factors.rank();
    if keep >= rank {
        return Ok(());
    }
    let s = factors.s.as_tensor().to_vec1::<f32>()?;
    let index = Tensor::new(top_indices(&s, keep).as_slice(), factors.u.device())?;
    let columns = |t: &Tensor| t.index_select(&index, 1);

    factors.u = Var::from_tensor(&columns(factors.u.as_tensor())?)?;
    factors.v = Var::from_tensor(&columns(factors.v.as_tensor())?)?;
    factors.s = Var::from_tensor(&factors.s.as_tensor().index_select(&index, 0)?)?;
    factors.u_b = columns(&factors.u_b)?;
    factors.v_b = columns(&factors.v_b)?;

    for (suffix, dim) in [("u", 1), ("v", 1), ("s", 0)] {
        if let Some(state) = optimizer.state.get_mut(&format!("{}.{suffix}", factors.name)) {
            state.m = state.m.index_select(&index, dim)?;
            state.v = state.v.index_select(&index, dim)?;
        }
    }
    Ok(())
}
