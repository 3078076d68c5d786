#include "runtime/network/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace vessel::network {

using nlohmann::json;

namespace {

constexpr int kStateVersion = 1;

json lease_to_json(const Lease& l) {
    return {{"ip", l.ip.str()},
            {"mac", l.mac.str()},
            {"tap", l.tap},
            {"pid", l.owner.pid},
            {"start_time", l.owner.start_time},
            {"label", l.label},
            {"created", l.created}};
}

Lease lease_from_json(const json& j) {
    Lease l;
    l.ip = Ipv4::parse(j.at("ip").get<std::string>());
    l.mac = Mac::parse(j.at("mac").get<std::string>());
    l.tap = j.value("tap", "");
    l.owner.pid = j.at("pid").get<pid_t>();
    l.owner.start_time = j.at("start_time").get<uint64_t>();
    l.label = j.value("label", "");
    l.created = j.value("created", int64_t{0});
    return l;
}

void mkdir_p(const std::string& path, mode_t mode) {
    for (size_t pos = 1; pos <= path.size(); ++pos) {
        if (pos != path.size() && path[pos] != '/') continue;
        std::string part = path.substr(0, pos);
        if (::mkdir(part.c_str(), mode) < 0 && errno != EEXIST)
            throw_errno("creating state directory " + part);
    }
}

std::string read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("reading " + path);
    std::string s;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("reading " + path);
        if (n == 0) break;
        s.append(buf, static_cast<size_t>(n));
    }
    return s;
}

}  // namespace

std::string to_json(const NetworkRecord& r) {
    json leases = json::array();
    for (const auto& l : r.leases) leases.push_back(lease_to_json(l));
    json dns = json::array();
    for (const auto& d : r.dns) dns.push_back(d.str());
    json j = {{"version", kStateVersion},
              {"name", r.name},
              {"subnet", r.subnet.str()},
              {"gateway", r.gateway.str()},
              {"bridge", r.bridge},
              {"nft_table", r.nft_table},
              {"dns", dns},
              {"created", r.created},
              {"last_allocated", r.last_allocated.str()},
              {"leases", leases}};
    return j.dump(2) + "\n";
}

NetworkRecord record_from_json(const std::string& text, const std::string& origin) {
    try {
        json j = json::parse(text);
        if (j.at("version").get<int>() != kStateVersion)
            throw std::runtime_error("unsupported state version " + j.at("version").dump());
        NetworkRecord r;
        r.name = j.at("name").get<std::string>();
        r.subnet = Cidr::parse(j.at("subnet").get<std::string>());
        r.gateway = Ipv4::parse(j.at("gateway").get<std::string>());
        r.bridge = j.at("bridge").get<std::string>();
        r.nft_table = j.at("nft_table").get<std::string>();
        for (const auto& d : j.value("dns", json::array()))
            r.dns.push_back(Ipv4::parse(d.get<std::string>()));
        r.created = j.value("created", int64_t{0});
        r.last_allocated = Ipv4::parse(j.value("last_allocated", "0.0.0.0"));
        for (const auto& l : j.at("leases")) r.leases.push_back(lease_from_json(l));
        return r;
    } catch (const std::exception& e) {
        throw std::runtime_error("corrupt network state " + origin + ": " + e.what());
    }
}

std::string default_state_root() {
    const char* s = std::getenv("VESSEL_STATE_DIR");
    return s && *s ? s : "/var/lib/vessel";
}

void validate_network_name(const std::string& name) {
    auto ok_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    };
    bool ok = !name.empty() && name.size() <= 64 &&
              std::all_of(name.begin(), name.end(), ok_char) && name[0] != '_' && name[0] != '.' &&
              name[0] != '-';
    if (!ok)
        throw std::invalid_argument("invalid network name '" + name +
                                    "': use 1-64 letters, digits, '_', '.', '-', starting with a "
                                    "letter or digit");
}

void write_file_atomic(const std::string& path, const std::string& data) {
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
        UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!fd) throw_errno("creating " + tmp);
        const char* p = data.data();
        size_t left = data.size();
        while (left > 0) {
            ssize_t n = ::write(fd.get(), p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                int e = errno;
                ::unlink(tmp.c_str());
                throw_errno("writing " + tmp, e);
            }
            p += n;
            left -= static_cast<size_t>(n);
        }
        if (::fsync(fd.get()) < 0) {
            int e = errno;
            ::unlink(tmp.c_str());
            throw_errno("syncing " + tmp, e);
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw_errno("renaming " + tmp + " to " + path, e);
    }
    std::string dir = path.substr(0, path.rfind('/'));
    UniqueFd d(::open(dir.empty() ? "/" : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d) ::fsync(d.get());  // the rename is durable once the directory is
}

NetworkStore::NetworkStore(std::string root) : dir_(std::move(root) + "/networks") {}

NetworkStore::Lock NetworkStore::lock(bool exclusive) const {
    if (exclusive) mkdir_p(dir_, 0755);
    std::string path = dir_ + "/.lock";
    UniqueFd fd(::open(path.c_str(), (exclusive ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0644));
    if (!fd) {
        if (!exclusive && errno == ENOENT) return Lock();
        throw_errno("opening " + path);
    }
    while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) < 0) {
        if (errno != EINTR) throw_errno("locking " + path);
    }
    return Lock(std::move(fd));
}

std::vector<NetworkRecord> NetworkStore::load_all() const {
    std::vector<NetworkRecord> out;
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir_.c_str()), ::closedir);
    if (!d) {
        if (errno == ENOENT) return out;
        throw_errno("reading state directory " + dir_);
    }
    while (dirent* e = ::readdir(d.get())) {
        std::string n = e->d_name;
        if (n.size() <= 5 || n[0] == '.' || n.compare(n.size() - 5, 5, ".json") != 0) continue;
        std::string path = dir_ + "/" + n;
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0 || !S_ISREG(st.st_mode)) continue;
        out.push_back(record_from_json(read_file(path), path));
    }
    std::sort(out.begin(), out.end(),
              [](const NetworkRecord& a, const NetworkRecord& b) { return a.name < b.name; });
    return out;
}

std::optional<NetworkRecord> NetworkStore::load(const std::string& name) const {
    validate_network_name(name);
    std::string path = path_of(name);
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno("reading " + path);
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return record_from_json(read_file(path), path);
}

void NetworkStore::save(const NetworkRecord& r) const {
    validate_network_name(r.name);
    write_file_atomic(path_of(r.name), to_json(r));
}

void NetworkStore::remove(const std::string& name) const {
    std::string path = path_of(name);
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) throw_errno("removing " + path);
}

}  // namespace vessel::network
