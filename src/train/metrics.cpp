#include "train/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/atomic_file.h"

namespace tuner {

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
    f_ = std::fopen(path.c_str(), append ? "ab" : "wb");
    if (!f_) fail("[train] {}: cannot open for writing ({})", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() {
    if (f_) std::fclose(f_);
}

void MetricsLog::write(const nlohmann::json& record) {
    std::string line = record.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
        fail("[train] {}: write failed (disk full?)", path_);
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
    std::vector<nlohmann::json> out;
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
        try {
            out.push_back(nlohmann::json::parse(line));
        } catch (const nlohmann::json::parse_error&) {
        }
    }
    return out;
}

void write_loss_svg(const std::string& path, const std::vector<nlohmann::json>& records, const std::string& title) {
    struct Pt {
        double x, y;
    };
    std::vector<Pt> train, eval;
    for (const auto& r : records) {
        if (!r.contains("step")) continue;
        double step = r["step"].get<double>();
        if (r.contains("loss") && r["loss"].is_number()) train.push_back({step, r["loss"].get<double>()});
        if (r.contains("eval_loss") && r["eval_loss"].is_number()) eval.push_back({step, r["eval_loss"].get<double>()});
    }
    const double W = 720, H = 420, L = 64, R = 20, T = 40, B = 48;
    double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    bool any = false;
    for (const auto* s : {&train, &eval})
        for (const Pt& p : *s) {
            if (!std::isfinite(p.y)) continue;
            if (!any) x0 = x1 = p.x, y0 = y1 = p.y, any = true;
            x0 = std::min(x0, p.x), x1 = std::max(x1, p.x), y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
        }
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1e-3;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
    auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    auto Y = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); };
    std::string svg = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        "<text x=\"{}\" y=\"24\" font-size=\"15\">{}</text>\n",
        W, H, L, title);
    for (int i = 0; i <= 5; i++) {  // grid and axis labels
        double yv = y0 + (y1 - y0) * i / 5.0, xv = x0 + (x1 - x0) * i / 5.0;
        svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", L, Y(yv),
                           W - R, Y(yv));
        svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n", L - 6, Y(yv) + 4, yv);
        svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.0f}</text>\n", X(xv), H - B + 18,
                           xv);
    }
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">optimizer step</text>\n", (W + L) / 2,
                       H - 10);
    auto polyline = [&](const std::vector<Pt>& pts, const char* colour, const char* label, int row) {
        if (pts.empty()) return;
        std::string d;
        for (const Pt& p : pts)
            if (std::isfinite(p.y)) d += fmt::format("{:.1f},{:.1f} ", X(p.x), Y(p.y));
        svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>\n", colour, d);
        if (pts.size() < 40)
            for (const Pt& p : pts)
                if (std::isfinite(p.y))
                    svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n", X(p.x), Y(p.y),
                                       colour);
        svg += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"14\" height=\"3\" fill=\"{}\"/><text x=\"{:.1f}\" "
                           "y=\"{}\">{}</text>\n",
                           W - R - 130, T + 6 + 16 * row, colour, W - R - 110, T + 10 + 16 * row, label);
    };
    polyline(train, "#1f77b4", "train loss", 0);
    polyline(eval, "#d62728", "validation loss", 1);
    svg += "</svg>\n";
    write_text_atomic(path, svg, "train");
}

}  // namespace tuner
