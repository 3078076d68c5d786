// Typed, path-naming accessors over nlohmann::json, shared by the config and state parsers.
// Internal to vessel_oci. Every failure throws ConfigError "<origin>: <path>: <problem>".
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/spec.h"

namespace vessel::oci {

// A string as a JSON literal, for messages: "a\"b" stays readable and unambiguous.
inline std::string json_quote(std::string_view s) {
    return nlohmann::json(std::string(s)).dump();
}

class JsonReader {
  public:
    using json = nlohmann::json;

    std::string origin;

    static std::string join(const std::string& base, const char* key) {
        return base.empty() ? std::string(key) : base + "." + key;
    }

    // The member, or nullptr when it is missing or JSON null (Go engines write null for
    // unset optional fields).
    static const json* member(const json& obj, const char* key) {
        const auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return nullptr;
        return &*it;
    }

    [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
        throw ConfigError(origin + ": " + path + ": " + problem);
    }

    void require_object(const json& j, const std::string& path) const {
        if (!j.is_object()) fail(path, "must be an object");
    }

    template <typename T>
    T require(std::optional<T> v, const std::string& path) const {
        if (!v) fail(path, "required");
        return std::move(*v);
    }

    std::optional<std::string> get_string(const json& obj, const char* key,
                                          const std::string& path) const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_string()) fail(path, "must be a string");
        return v->get<std::string>();
    }

    std::optional<bool> get_bool(const json& obj, const char* key, const std::string& path) const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) fail(path, "must be a boolean");
        return v->get<bool>();
    }

    uint64_t uint_value(const json& v, const std::string& path, uint64_t max) const {
        const std::string msg = "must be an integer from 0 to " + std::to_string(max);
        if (!v.is_number_integer()) fail(path, msg);
        if (v.is_number_unsigned()) {
            const uint64_t u = v.get<uint64_t>();
            if (u > max) fail(path, msg);
            return u;
        }
        const int64_t s = v.get<int64_t>();
        if (s < 0 || static_cast<uint64_t>(s) > max) fail(path, msg);
        return static_cast<uint64_t>(s);
    }

    int64_t int_value(const json& v, const std::string& path, int64_t min, int64_t max,
                      const std::string& message = "") const {
        std::string msg = message;
        if (msg.empty()) {
            msg = (min == INT64_MIN && max == INT64_MAX)
                      ? std::string("must be an integer")
                      : "must be an integer from " + std::to_string(min) + " to " +
                            std::to_string(max);
        }
        if (!v.is_number_integer()) fail(path, msg);
        if (v.is_number_unsigned()) {
            const uint64_t u = v.get<uint64_t>();
            if (u > static_cast<uint64_t>(INT64_MAX) || static_cast<int64_t>(u) > max)
                fail(path, msg);
            if (static_cast<int64_t>(u) < min) fail(path, msg);
            return static_cast<int64_t>(u);
        }
        const int64_t s = v.get<int64_t>();
        if (s < min || s > max) fail(path, msg);
        return s;
    }

    std::optional<uint64_t> get_uint(const json& obj, const char* key, const std::string& path,
                                     uint64_t max) const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        return uint_value(*v, path, max);
    }

    std::optional<int64_t> get_int(const json& obj, const char* key, const std::string& path,
                                   int64_t min, int64_t max,
                                   const std::string& message = "") const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        return int_value(*v, path, min, max, message);
    }

    std::optional<std::vector<std::string>> get_string_array(const json& obj, const char* key,
                                                             const std::string& path) const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_array()) fail(path, "must be an array of strings");
        std::vector<std::string> out;
        out.reserve(v->size());
        for (size_t i = 0; i < v->size(); ++i) {
            if (!(*v)[i].is_string())
                fail(path + "[" + std::to_string(i) + "]", "must be a string");
            out.push_back((*v)[i].get<std::string>());
        }
        return out;
    }

    std::optional<std::map<std::string, std::string>> get_string_map(
        const json& obj, const char* key, const std::string& path) const {
        const json* v = member(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_object()) fail(path, "must be an object of strings");
        std::map<std::string, std::string> out;
        for (auto it = v->begin(); it != v->end(); ++it) {
            if (!it.value().is_string())
                fail(path + "[" + json(it.key()).dump() + "]", "must be a string");
            out.emplace(it.key(), it.value().get<std::string>());
        }
        return out;
    }
};

}  // namespace vessel::oci
