// Persistent state of vessel networks: one JSON file per network under
// $VESSEL_STATE_DIR/networks (default /var/lib/vessel/networks), changed only under an
// exclusive flock on networks/.lock and written atomically (temporary file, fsync, rename,
// fsync of the directory), so readers never see half a file and a crash loses at most the
// change being made.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/network/addr.h"
#include "runtime/network/process.h"
#include "vmm/fd.h"

namespace vessel::network {

struct Lease {
    Ipv4 ip;
    Mac mac;
    std::string tap;      // host-side tap name (informational; the tap dies with its owner)
    ProcessId owner;      // the VMM holding the lease
    std::string label;    // free text from the caller (VM or container id)
    int64_t created = 0;  // unix seconds
};

struct NetworkRecord {
    std::string name;
    Cidr subnet;  // canonical (no host bits)
    Ipv4 gateway;
    std::string bridge;
    std::string nft_table;  // table in family ip
    std::vector<Ipv4> dns;  // handed to guests when their --net gives none
    int64_t created = 0;
    Ipv4 last_allocated;  // allocation resumes after it, so freed addresses rest a while
    std::vector<Lease> leases;
};

std::string to_json(const NetworkRecord& r);
// Throws std::runtime_error naming `origin` when the text is not a valid record.
NetworkRecord record_from_json(const std::string& text, const std::string& origin);

// $VESSEL_STATE_DIR, or /var/lib/vessel.
std::string default_state_root();

class NetworkStore {
  public:
    explicit NetworkStore(std::string root = default_state_root());

    // Holds the store's flock until destroyed. Exclusive for changes, shared for reading.
    class Lock {
      public:
        Lock() = default;
        explicit Lock(UniqueFd fd) : fd_(std::move(fd)) {}

      private:
        UniqueFd fd_;
    };
    // Creates the directory on first use (exclusive only; a shared lock on a store that was
    // never created returns an empty lock and the store reads as empty).
    Lock lock(bool exclusive) const;

    const std::string& dir() const { return dir_; }
    std::string path_of(const std::string& name) const { return dir_ + "/" + name + ".json"; }

    // Callers hold the lock.
    std::vector<NetworkRecord> load_all() const;  // sorted by name
    std::optional<NetworkRecord> load(const std::string& name) const;
    void save(const NetworkRecord& r) const;
    void remove(const std::string& name) const;

  private:
    std::string dir_;
};

// Network names: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit. Throws
// std::invalid_argument otherwise.
void validate_network_name(const std::string& name);

// Writes `data` to `path` atomically: `path`.tmp.PID, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace vessel::network
