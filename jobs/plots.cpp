#include "jobs/plots.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

namespace shc::jobs {
namespace {

namespace fs = std::filesystem;

// A gnuplot double-quoted string: backslash and quote escaped, a line break as \n.
std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// `text` with every line longer than `width` characters broken at spaces (a title wider than
// the image would be clipped).
std::string wrapped(const std::string& text, size_t width) {
  std::istringstream lines(text);
  std::string out;
  for (std::string line; std::getline(lines, line);) {
    if (!out.empty()) out += '\n';
    std::istringstream words(line);
    size_t length = 0;
    for (std::string word; words >> word;) {
      if (length > 0 && length + 1 + word.size() > width) {
        out += '\n';
        length = 0;
      } else if (length > 0) {
        out += ' ';
        ++length;
      }
      out += word;
      length += word.size();
    }
  }
  return out;
}

void write_data(const LinePlot& plot, const std::string& path) {
  std::ofstream out(path);
  out.precision(10);
  // One data block per series (gnuplot's `index i`), separated by two blank lines.
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const auto& s = plot.series[i];
    if (s.x.size() != s.y.size())
      throw std::invalid_argument("plot series '" + s.title + "': x and y differ in length");
    out << "# " << s.title << "\n";
    for (size_t j = 0; j < s.x.size(); ++j)
      out << s.x[j] << " " << (std::isfinite(s.y[j]) ? s.y[j] : NAN) << "\n";
    out << "\n\n";
  }
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

void write_script(const LinePlot& plot, const std::string& name, const std::string& path) {
  std::ofstream out(path);
  // noenhanced: titles and labels are literal text (no _ subscripts); UTF-8 for symbols like ‖.
  // The legend sits in its own band under the x label (a legend inside the axes would hide
  // data); the offsets keep curves and reference lines off the frame.
  out << "set encoding utf8\n"
      << "set terminal pngcairo size 960,640 font \"DejaVu Sans,12\" noenhanced\n"
      << "set output " << quoted("../" + name + ".png") << "\n"
      << "set title " << quoted(wrapped(plot.title, 72)) << " font \",14\"\n"
      << "set xlabel " << quoted(plot.x_label) << "\n"
      << "set ylabel " << quoted(plot.y_label) << "\n"
      << "set grid\n"
      // Enough digits that tics stay distinct when the values differ only far behind the point
      // (a spectral norm of 0.99999 next to the bound 1).
      << "set format y \"%.10g\"\n"
      << "set key at screen 0.5, screen 0.015 center bottom horizontal box\n"
      << "set bmargin 8\n"
      << "set autoscale xfix\n"
      << "set offsets graph 0.04, graph 0.04, graph 0.05, graph 0.05\n"
      << "set datafile missing NaN\n";
  if (plot.log_y) out << "set logscale y\n";
  if (plot.x_tick_step > 0) out << "set xtics " << plot.x_tick_step << "\n";
  // Distinct point shapes, so that curves drawn on top of each other stay visible.
  constexpr int kPointTypes[] = {7, 5, 9, 11, 13};
  out << "plot ";
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const auto& s = plot.series[i];
    out << (i ? ", \\\n     " : "") << quoted(name + ".dat") << " index " << i
        << " using 1:2 title " << quoted(s.title);
    if (s.style == PlotSeries::Style::kReference) {
      out << " with lines lw 1.5 dt 2 lc rgb \"gray40\"";
    } else {
      out << " with linespoints lw 2 ps 1.1 pt " << kPointTypes[i % std::size(kPointTypes)];
    }
  }
  out << "\n";
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

// A single-quoted gnuplot string: '' stands for a quote inside it.
std::string single_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Runs `gnuplot -e "cd 'DIR'" SCRIPT` with its messages going to `log`; no shell in between.
void run_gnuplot(const std::string& dir, const std::string& script, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string cd = "cd " + single_quoted(dir);
  std::vector<char*> argv{const_cast<char*>("gnuplot"), const_cast<char*>("-e"), cd.data(),
                          const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    throw std::runtime_error("cannot run gnuplot (" + std::string(std::strerror(spawned)) +
                             "); the plots need it: apt-get install gnuplot-nox");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      throw std::runtime_error("waiting for gnuplot: " + std::string(strerror(errno)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream in(log);
    const std::string messages((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    throw std::runtime_error("gnuplot failed on " + dir + "/" + script + ": " + messages);
  }
}

}  // namespace

void write_line_plot(const LinePlot& plot, const std::string& dir, const std::string& name) {
  const fs::path sources = fs::path(dir) / "gnuplot";
  fs::create_directories(sources);
  write_data(plot, (sources / (name + ".dat")).string());
  write_script(plot, name, (sources / (name + ".gp")).string());
  const std::string log = (sources / (name + ".log")).string();
  run_gnuplot(fs::absolute(sources).string(), name + ".gp", log);
  fs::remove(log);
}

}  // namespace shc::jobs
