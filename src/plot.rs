//! `ssa plot`: test accuracy against epoch for several runs and, where `layers.csv` has them,
//! the per-layer gradient angles against step. Drawn as SVG with plotters; PNG output
//! rasterises that SVG with resvg, using the system's fonts for the labels.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::report::RunSummary;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 480;
/// Font families tried first for the PNG's labels.
const PREFERRED_FONTS: [&str; 3] = ["DejaVu Sans", "Liberation Sans", "Noto Sans"];

/// Short label of a run: its rule and model.
fn label(run: &RunSummary) -> String {
    format!("{} {}", run.rule, run.arch)
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing the plot failed: {e}"))
}

/// Draws the plot of `runs` as an SVG document.
pub fn render_svg(runs: &[RunSummary]) -> Result<String> {
    let with_angles = runs.iter().any(|r| !r.angles.is_empty());
    let height = if with_angles { 2 * PANEL_HEIGHT } else { PANEL_HEIGHT };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = if with_angles { root.split_evenly((2, 1)) } else { vec![root.clone()] };
        accuracy_panel(&panels[0], runs)?;
        if with_angles {
            angle_panel(&panels[1], runs)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn accuracy_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, runs: &[RunSummary]) -> Result<()> {
    let max_epoch = runs.iter().flat_map(|r| r.curve.iter().map(|(e, _)| *e)).max().unwrap_or(1).max(1);
    let top = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|(_, a)| 100.0 * a))
        .fold(10.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("Test top-1 accuracy", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_epoch as f64, 0f64..(top * 1.05).min(100.0))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("test top-1 (%)")
        .draw()
        .map_err(plot_error)?;
    for (index, run) in runs.iter().enumerate() {
        let colour = series_colour(index);
        let points: Vec<(f64, f64)> = run.curve.iter().map(|(e, a)| (*e as f64, 100.0 * a)).collect();
        // A one-point line draws nothing (and resvg warns about it); the marker shows the point.
        let line = if points.len() > 1 { points.clone() } else { Vec::new() };
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(label(run))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)
}

/// Returns the colour of series `index`: the ten Tableau colours in turn, all dark enough to
/// read on white (plotters' larger palette has near-white entries).
fn series_colour(index: usize) -> RGBAColor {
    const TABLEAU: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TABLEAU[index % TABLEAU.len()];
    RGBColor(r, g, b).to_rgba()
}

fn angle_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, runs: &[RunSummary]) -> Result<()> {
    let max_step = runs
        .iter()
        .flat_map(|r| r.angles.iter().flat_map(|(_, points)| points.iter().map(|(s, _)| *s)))
        .max()
        .unwrap_or(1)
        .max(1);
    // Angles run from 0 to 180°: show 0–90° unless an update points away from the gradient.
    let largest = runs.iter().flat_map(|r| r.angles.iter().flat_map(|(_, points)| points.iter().map(|(_, a)| *a))).fold(0f64, f64::max);
    let max_angle = if largest > 90.0 { 180.0 } else { 90.0 };
    let mut chart = ChartBuilder::on(area)
        .caption("Angle between the rule's update and the BP gradient, per layer", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_step as f64, 0f64..max_angle)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("optimiser step")
        .y_desc("angle (degrees)")
        .draw()
        .map_err(plot_error)?;
    let mut series = 0;
    for run in runs {
        for (layer, points) in &run.angles {
            // BP's own angle is zero by definition; leave it out rather than hide other lines.
            if points.iter().all(|(_, a)| *a < 0.01) {
                continue;
            }
            let colour = series_colour(series);
            series += 1;
            let points: Vec<(f64, f64)> = points.iter().map(|(s, a)| (*s as f64, *a)).collect();
            // A single measurement gets a marker, since a one-point line draws nothing.
            let (line, markers) = if points.len() > 1 { (points, Vec::new()) } else { (Vec::new(), points) };
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(plot_error)?
                .label(format!("{}: {layer}", label(run)))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart
                .draw_series(markers.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(plot_error)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)
}

/// Writes the plot of `runs` to `out`: SVG or PNG, by the file's extension.
pub fn write_plot(runs: &[RunSummary], out: &Path) -> Result<()> {
    let svg = render_svg(runs)?;
    let extension = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let bytes = match extension.as_deref() {
        Some("svg") => svg.into_bytes(),
        Some("png") => rasterize(&svg)?,
        _ => {
            return Err(Error::Config(format!(
                "--out {}: the file name must end in .png or .svg",
                out.display()
            )))
        }
    };
    crate::checkpoint::write_atomically(out, &bytes)
}

/// Renders SVG text to PNG bytes.
fn rasterize(svg: &str) -> Result<Vec<u8>> {
    let mut options = resvg::usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The SVG names the generic "sans-serif" family, so map it to an installed one.
    let families: Vec<String> = fonts.faces().flat_map(|face| face.families.iter().map(|(name, _)| name.clone())).collect();
    match PREFERRED_FONTS.iter().find(|f| families.iter().any(|name| name == *f)).or(families.first().map(|f| f as &str).as_ref()) {
        Some(family) => fonts.set_sans_serif_family(family.to_string()),
        None => tracing::warn!(
            "no system fonts found: the PNG has no text; write an .svg file or install fonts-dejavu-core"
        ),
    }
    let tree = resvg::usvg::Tree::from_str(svg, &options).map_err(plot_error)?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| plot_error("empty image"))?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(plot_error)
}
