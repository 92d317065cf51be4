#include "core/tensor.h"

namespace tuner {

std::string Tensor::shape_str() const {
    std::string s = "(";
    for (int i = 0; i < ndim; i++) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    if (ndim == 1) s += ",";
    return s + ")";
}

}  // namespace tuner
