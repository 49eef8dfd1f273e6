//! `docs/benchmarks.svg`: requests/s of every target relative to native
//! tokio, grouped by scenario.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Group, Table};

/// Pixel size of the plot, at least: wider when there are more bars than
/// fit (see [`size`]).
const SIZE: (u32, u32) = (1100, 540);
/// Width of the legend on the right.
const LEGEND_WIDTH: u32 = 300;
/// The least width of one bar with its value above it, and of the axis.
const BAR_WIDTH: u32 = 26;
const AXIS_WIDTH: u32 = 100;

/// The plot's size: [`SIZE`], wider when every target in every scenario
/// (TCP, UDP, unix) would not leave each bar [`BAR_WIDTH`].
fn size(table: &Table) -> (u32, u32) {
    let bars = (table.scenarios.len() * table.targets.len()) as u32;
    let plot = (SIZE.0 - LEGEND_WIDTH).max(bars * BAR_WIDTH + AXIS_WIDTH);
    (plot + LEGEND_WIDTH, SIZE.1)
}

/// Renders the plot as an SVG document titled `title`.
pub fn render_svg(table: &Table, title: &str) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let size = size(table);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_horizontally(size.0 - LEGEND_WIDTH);
        draw_bars(table, title, &plot_area)?;
        draw_legend(table, &legend_area)?;
        root.present()?;
    }
    Ok(svg)
}

fn draw_bars(
    table: &Table,
    title: &str,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let groups = table.scenarios.len().max(1) as f64;
    let highest = table
        .scenarios
        .iter()
        .flat_map(|&s| (0..table.targets.len()).filter_map(move |t| table.ratio(t, s)))
        .fold(1.0_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..groups, 0.0..highest * 1.12)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("requests/s ÷ native tokio (same run)")
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (groups, 1.0)],
        BLACK.mix(0.4),
    )))?;

    let width = 0.8 / table.targets.len().max(1) as f64;
    let value_style =
        TextStyle::from(("sans-serif", 10).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (t, (_, group)) in table.targets.iter().enumerate() {
        let color = color(table, t, *group);
        for (s, &scenario) in table.scenarios.iter().enumerate() {
            let Some(ratio) = table.ratio(t, scenario) else {
                continue;
            };
            let left = s as f64 + 0.1 + t as f64 * width;
            let right = left + width * 0.85;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left, 0.0), (right, ratio)],
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{ratio:.2}"),
                ((left + right) / 2.0, ratio),
                value_style.clone(),
            )))?;
        }
    }

    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (s, scenario) in table.scenarios.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(s as f64 + 0.5, 0.0));
        area.draw(&Text::new(
            scenario.short(),
            (x, y + 8),
            label_style.clone(),
        ))?;
    }
    Ok(())
}

fn draw_legend(
    table: &Table,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (t, (name, group)) in table.targets.iter().enumerate() {
        let y = 60 + 24 * t as i32;
        area.draw(&Rectangle::new(
            [(8, y - 7), (22, y + 7)],
            color(table, t, *group).filled(),
        ))?;
        area.draw(&Text::new(name.clone(), (30, y), style.clone()))?;
    }
    Ok(())
}

/// Colours by kind: greys for native, warm for Perl, cool for netserver.
fn color(table: &Table, target: usize, group: Group) -> RGBColor {
    const NETSERVER: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(23, 190, 207),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(127, 127, 200),
    ];
    const PERL: [RGBColor; 3] = [
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
        RGBColor(188, 189, 34),
    ];
    let nth = table.targets[..target]
        .iter()
        .filter(|(_, g)| *g == group)
        .count();
    match group {
        Group::Native => RGBColor(70, 70, 70),
        Group::Perl => PERL[nth % PERL.len()],
        Group::Netserver => NETSERVER[nth % NETSERVER.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{sample, sockets};

    #[test]
    fn draws_an_svg_with_every_target() {
        let table = Table::from_records(&sample());
        let svg = render_svg(&table, "test").unwrap();
        assert!(svg.starts_with("<svg"));
        for name in ["native", "ns", "perl", "0.80", "connect, 8 clients"] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert_eq!(size(&table), SIZE);
    }

    #[test]
    fn widens_for_more_bars() {
        let mut records = sample();
        records.extend(sockets());
        let table = Table::from_records(&records);
        // 4 scenarios × 4 targets fit; a full run's 6 × 9 do not.
        assert_eq!(size(&table), SIZE);
        let svg = render_svg(&table, "test").unwrap();
        assert!(svg.contains("UDP, 32 clients") && svg.contains("unix round trip, 8 clients"));
        let mut wide = Table::from_records(&records);
        wide.targets
            .extend((0..5).map(|i| (format!("t{i}"), Group::Netserver)));
        wide.scenarios.extend(wide.scenarios.clone());
        assert_eq!(
            size(&wide),
            (8 * 9 * BAR_WIDTH + AXIS_WIDTH + LEGEND_WIDTH, SIZE.1)
        );
    }
}
