#include "nn/rope.h"

#include <cmath>

namespace tuner {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
    const int64_t HD = c.head_dim;
    std::vector<float> inv(size_t(HD / 2));
    const double pi = 3.14159265358979323846;
    for (int64_t i = 0; i < HD / 2; i++) {
        // HF computes base ** (arange(0, dim, 2).float() / dim) in f32 and takes the reciprocal;
        // computing in double and rounding once differs from that by at most an ulp.
        double f = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(HD));
        const RopeScaling& s = c.rope_scaling;
        if (s.type == RopeScalingType::Linear) {
            f /= s.factor;
        } else if (s.type == RopeScalingType::Llama3) {
            double wavelen = 2.0 * pi / f;
            double low_freq_wavelen = double(s.original_max_position_embeddings) / s.low_freq_factor;
            double high_freq_wavelen = double(s.original_max_position_embeddings) / s.high_freq_factor;
            if (wavelen > low_freq_wavelen) {
                f /= s.factor;
            } else if (wavelen >= high_freq_wavelen) {
                double smooth = (double(s.original_max_position_embeddings) / wavelen - s.low_freq_factor) /
                                (s.high_freq_factor - s.low_freq_factor);
                f = (1.0 - smooth) * f / s.factor + smooth * f;
            }
        }
        inv[size_t(i)] = float(f);
    }
    return inv;
}

}  // namespace tuner
