// PNG line plots drawn by gnuplot (SPEC §2: a real plotting tool, never hand-drawn pixels; the
// `gnuplot-nox` package, pngcairo terminal). Each plot keeps its data and script beside it, so a
// user can restyle it: DIR/NAME.png from DIR/gnuplot/NAME.dat and DIR/gnuplot/NAME.gp
// (`cd DIR/gnuplot && gnuplot NAME.gp` redraws it).
#pragma once

#include <string>
#include <vector>

namespace shc::jobs {

struct PlotSeries {
  enum class Style { kLinePoints, kReference };  // data, or a dashed line such as a bound
  std::string title;                             // its legend entry
  std::vector<double> x, y;                      // a non-finite y leaves a gap
  Style style = Style::kLinePoints;
};

struct LinePlot {
  std::string title, x_label, y_label;  // UTF-8, shown literally; long title lines wrap
  std::vector<PlotSeries> series;
  bool log_y = false;
  double x_tick_step = 0;  // distance between x tics; 0 lets gnuplot choose
};

// Draws `plot` into DIR/NAME.png (NAME: letters, digits and '_'). std::runtime_error when gnuplot
// is missing (naming the package) or fails (with its message).
void write_line_plot(const LinePlot& plot, const std::string& dir, const std::string& name);

}  // namespace shc::jobs
