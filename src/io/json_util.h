// Small helpers for reading JSON files with messages users can act on.
#pragma once

#include <nlohmann/json.hpp>

namespace tuner {

// The JSON type of a value as messages name it: "null", "object", "array", "string",
// "boolean", "integer", "float".
inline const char* json_type_name(const nlohmann::json& v) {
    using t = nlohmann::json::value_t;
    switch (v.type()) {
        case t::null: return "null";
        case t::object: return "object";
        case t::array: return "array";
        case t::string: return "string";
        case t::boolean: return "boolean";
        case t::number_integer:
        case t::number_unsigned: return "integer";
        case t::number_float: return "float";
        case t::binary: return "binary";
        case t::discarded: return "discarded";
    }
    return "value";
}

}  // namespace tuner
