#include "infer/sampling.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace tuner {

int32_t Sampler::sample(std::vector<float>& logits, const std::vector<int32_t>& history) {
    const int32_t V = int32_t(logits.size());
    if (p_.repetition_penalty != 1.0) {
        std::unordered_set<int32_t> seen(history.begin(), history.end());
        const float rp = float(p_.repetition_penalty);
        for (int32_t id : seen)
            if (id >= 0 && id < V) logits[size_t(id)] = logits[size_t(id)] > 0 ? logits[size_t(id)] / rp : logits[size_t(id)] * rp;
    }
    if (p_.temperature <= 0.0) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

    // Candidates sorted by logit, cut to top-k.
    cand_.resize(size_t(V));
    for (int32_t i = 0; i < V; i++) cand_[size_t(i)] = {logits[size_t(i)], i};
    size_t k = (p_.top_k > 0 && p_.top_k < V) ? size_t(p_.top_k) : size_t(V);
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(), by_logit);
    cand_.resize(k);

    // Softmax at the temperature (in double), then keep the smallest prefix with mass >= top_p
    // (the token that crosses the threshold is kept, as HF's TopPLogitsWarper does).
    const double inv_t = 1.0 / p_.temperature;
    const double top = cand_[0].first;
    std::vector<double> prob(k);
    double sum = 0;
    for (size_t i = 0; i < k; i++) sum += prob[i] = std::exp((double(cand_[i].first) - top) * inv_t);
    size_t keep = k;
    if (p_.top_p < 1.0) {
        double mass = 0;
        for (size_t i = 0; i < k; i++) {
            mass += prob[i] / sum;
            if (mass >= p_.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept = 0;
    for (size_t i = 0; i < keep; i++) kept += prob[i];
    double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
    for (size_t i = 0; i < keep; i++) {
        r -= prob[i];
        if (r < 0) return cand_[i].second;
    }
    return cand_[keep - 1].second;
}

}  // namespace tuner
