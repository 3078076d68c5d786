// The control socket of a running VM (`vessel boot --id NAME` / `--api-socket PATH`): one
// JSON request line per connection, one JSON answer line. Requests:
//   {"op":"snapshot","dir":DIR,"after":"resume"|"stop"|"pause"}
//   {"op":"pause"}  {"op":"resume"}  {"op":"stop"}  {"op":"ping"}
// Answers: {"ok":true,...} or {"ok":false,"error":MESSAGE}.
#pragma once

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "snapshot/vm_snapshot.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

namespace vessel::snapshot {

// Answers one request for machine `m` with its attached `devices`. Never throws.
// `last_snapshot`: the directory of this machine's latest snapshot (or of the one it was
// restored from), the parent of a {"diff": true} snapshot; updated by each snapshot taken.
nlohmann::json handle_request(vmm::Machine& m, const std::vector<AttachedDevice>& devices,
                              const nlohmann::json& meta, const std::string& line,
                              std::string* last_snapshot = nullptr);

class ControlServer {
  public:
    // Binds `path` (a stale socket there is replaced; a live one is an error naming it) and
    // serves requests on a thread of its own until destroyed; `meta` goes into snapshots.
    // `restored_from`: the snapshot directory the machine was restored from (absolute), if any.
    ControlServer(std::string path, vmm::Machine& m, std::vector<AttachedDevice> devices,
                  nlohmann::json meta, std::string restored_from = {});
    // Serves a socket bound earlier with listen_at() (a jailed VMM binds before it enters
    // the jail and starts its threads after).
    ControlServer(UniqueFd listening, std::string path, vmm::Machine& m,
                  std::vector<AttachedDevice> devices, nlohmann::json meta,
                  std::string restored_from = {});
    // Binds and listens on `path` as the first constructor does.
    static UniqueFd listen_at(const std::string& path);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;
    const std::string& path() const { return path_; }

  private:
    void serve() noexcept;

    std::string path_;
    vmm::Machine& m_;
    std::vector<AttachedDevice> devices_;
    nlohmann::json meta_;
    std::string last_snapshot_;  // control thread only, once started
    UniqueFd listen_, stop_;
    std::thread thread_;
};

// Sends `request` to the control socket at `path` and returns the answer. Throws
// std::system_error when no VM listens there, std::runtime_error on a timeout.
nlohmann::json control_call(const std::string& path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout);

// Whether something accepts connections on the Unix socket `path`.
bool socket_is_live(const std::string& path);

}  // namespace vessel::snapshot
