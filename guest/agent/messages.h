// JSON forms of the protocol's control messages. Decoders never throw: the agent decodes
// what the host sends and the client decodes what the guest sends, and each treats the other
// as untrusted.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "guest/agent/spec.h"

namespace vessel::agent {

using Json = nlohmann::json;

// Error codes of error responses ({"error": {"code": ..., "message": ..., "errno": ...}}).
namespace err {
inline constexpr std::string_view kBadRequest = "bad_request";
inline constexpr std::string_view kUnknownOp = "unknown_op";
inline constexpr std::string_view kHandshakeRequired = "handshake_required";
inline constexpr std::string_view kUnsupportedVersion = "unsupported_version";
inline constexpr std::string_view kNotFound = "not_found";
inline constexpr std::string_view kExited = "exited";
inline constexpr std::string_view kNotTty = "not_tty";
inline constexpr std::string_view kLimit = "limit";
inline constexpr std::string_view kSpawnFailed = "spawn_failed";
inline constexpr std::string_view kExecFailed = "exec_failed";
inline constexpr std::string_view kShuttingDown = "shutting_down";
inline constexpr std::string_view kProtocol = "protocol";
inline constexpr std::string_view kIdentityFailed = "identity_failed";
inline constexpr std::string_view kRootFailed = "root_failed";
inline constexpr std::string_view kNotAttachable = "not_attachable";
}  // namespace err

// Parses text as a JSON object within check_json_limits(); nullopt and a reason otherwise.
std::optional<Json> parse_object(std::string_view text, std::string* error);

// Serialises without throwing: invalid UTF-8 is replaced (only agent-made text can have it).
std::string dump(const Json& j);

// Client side. Throws std::invalid_argument if a string is not valid UTF-8 (JSON cannot
// carry it) or contains a NUL.
Json spec_to_json(const ProcessSpec& spec);
// Agent side: checks every field against the limits in wire.h.
std::optional<ProcessSpec> spec_from_json(const Json& j, std::string* error);

Json exit_to_json(const ExitStatus& e);
std::optional<ExitStatus> exit_from_json(const Json& j, std::string* error);

Json info_to_json(const ProcessInfo& p);
std::optional<ProcessInfo> info_from_json(const Json& j, std::string* error);

// Client side: throws std::invalid_argument for what the agent would refuse.
Json identity_to_json(const Identity& id);
// Agent side: names, MACs, addresses and sizes checked (the request is untrusted).
std::optional<Identity> identity_from_json(const Json& j, std::string* error);

Json root_to_json(const RootRequest& r);  // throws std::invalid_argument
std::optional<RootRequest> root_from_json(const Json& j, std::string* error);

Json error_json(std::string_view code, std::string_view message, int errno_value = 0);

}  // namespace vessel::agent
