#include "oci/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <vector>

#include "oci/json_read.h"

namespace vessel::oci {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr size_t kMaxIdLength = 255;  // NAME_MAX: the id is a directory name
constexpr size_t kMaxStateBytes = 16u << 20;

std::atomic<unsigned> g_temp_counter{0};

// Go's encoding/json string encoding: HTML-safe escapes for <, > and &, \u2028/\u2029
// escaped, every byte of invalid UTF-8 replaced by \ufffd.
void append_go_string(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out += '"';
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
                case '"':
                    out += "\\\"";
                    break;
                case '\\':
                    out += "\\\\";
                    break;
                case '\b':
                    out += "\\b";
                    break;
                case '\f':
                    out += "\\f";
                    break;
                case '\n':
                    out += "\\n";
                    break;
                case '\r':
                    out += "\\r";
                    break;
                case '\t':
                    out += "\\t";
                    break;
                default:
                    if (c < 0x20 || c == '<' || c == '>' || c == '&') {
                        out += "\\u00";
                        out += hex[c >> 4];
                        out += hex[c & 0xf];
                    } else {
                        out += static_cast<char>(c);
                    }
            }
            ++i;
            continue;
        }
        // Decode one UTF-8 sequence; anything malformed is one replacement per byte.
        size_t len = 0;
        uint32_t cp = 0, min = 0;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        }
        bool ok = len != 0 && i + len <= s.size();
        for (size_t k = 1; ok && k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xc0) != 0x80) ok = false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
        if (!ok) {
            out += "\\ufffd";
            ++i;
            continue;
        }
        if (cp == 0x2028 || cp == 0x2029) {
            out += cp == 0x2028 ? "\\u2028" : "\\u2029";
        } else {
            out.append(s.substr(i, len));
        }
        i += len;
    }
    out += '"';
}

// One runc containerState object, either pretty (MarshalIndent with "  ", at `depth`) or
// compact (Encoder). Field order and omitempty follow runc's struct.
void append_container_state(std::string& out, const State& s, bool pretty, int depth,
                            const std::string& owner) {
    const Status st = observed_status(s);
    const pid_t pid = st == Status::Stopped ? 0 : s.pid;
    const std::string nl =
        pretty ? "\n" + std::string(static_cast<size_t>(depth + 1) * 2, ' ') : "";
    const std::string close = pretty ? "\n" + std::string(static_cast<size_t>(depth) * 2, ' ') : "";
    const char* sep = pretty ? ": " : ":";
    bool first = true;
    const auto key = [&](const char* k) {
        if (!first) out += ',';
        first = false;
        out += nl;
        out += '"';
        out += k;
        out += '"';
        out += sep;
    };
    out += '{';
    key("ociVersion");
    append_go_string(out, s.oci_version);
    key("id");
    append_go_string(out, s.id);
    key("pid");
    out += std::to_string(pid);
    key("status");
    append_go_string(out, status_name(st));
    key("bundle");
    append_go_string(out, s.bundle);
    key("rootfs");
    append_go_string(out, s.rootfs);
    key("created");
    append_go_string(out, s.created.empty() ? "0001-01-01T00:00:00Z" : s.created);
    if (!s.annotations.empty()) {
        key("annotations");
        out += '{';
        bool first_ann = true;
        const std::string inner =
            pretty ? "\n" + std::string(static_cast<size_t>(depth + 2) * 2, ' ') : "";
        for (const auto& [k, v] : s.annotations) {
            if (!first_ann) out += ',';
            first_ann = false;
            out += inner;
            append_go_string(out, k);
            out += sep;
            append_go_string(out, v);
        }
        out += nl;
        out += '}';
    }
    key("owner");
    append_go_string(out, owner);
    out += close;
    out += '}';
}

void fsync_dir(const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno("opening " + dir + " to sync it");
    if (::fsync(fd.get()) < 0) throw_errno("syncing " + dir);
}

void write_all(int fd, std::string_view data, const std::string& what) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("writing " + what);
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
}

// dir/name replaced whole: temporary file, fsync, rename, fsync of the directory. Callers
// hold the container's lock (or own the directory), so one temporary name is enough.
void write_file_atomic(const std::string& dir, const std::string& name, std::string_view data) {
    const std::string tmp = dir + "/." + name + ".tmp";
    const std::string dst = dir + "/" + name;
    {
        UniqueFd fd(
            ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) throw_errno("creating " + tmp);
        write_all(fd.get(), data, tmp);
        if (::fsync(fd.get()) < 0) throw_errno("syncing " + tmp);
    }
    if (::rename(tmp.c_str(), dst.c_str()) < 0) throw_errno("renaming " + tmp + " to " + dst);
    fsync_dir(dir);
}

// The whole file, or nullopt if it (or its directory) does not exist.
std::optional<std::string> read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        throw_errno("opening " + path);
    }
    std::string text;
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("reading " + path);
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxStateBytes) throw std::runtime_error(path + ": larger than 16 MiB");
    }
    return text;
}

void mkdir_p(const std::string& path, mode_t mode) {
    if (path.empty()) throw std::invalid_argument("empty state root");
    for (size_t pos = 1; pos <= path.size(); ++pos) {
        if (pos != path.size() && path[pos] != '/') continue;
        const std::string part = path.substr(0, pos);
        if (::mkdir(part.c_str(), mode) < 0 && errno != EEXIST)
            throw_errno("creating state directory " + part);
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) throw_errno("state directory " + path);
    if (!S_ISDIR(st.st_mode))
        throw std::system_error(ENOTDIR, std::generic_category(), "state directory " + path);
}

void remove_tree(const std::string& path) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}

// A name no container id can have ('@' is not an id character), so listing skips it.
std::string temp_name(const char* kind) {
    return std::string("@") + kind + "." + std::to_string(::getpid()) + "." +
           std::to_string(g_temp_counter.fetch_add(1));
}

}  // namespace

std::string_view status_name(Status s) {
    switch (s) {
        case Status::Creating:
            return "creating";
        case Status::Created:
            return "created";
        case Status::Running:
            return "running";
        case Status::Stopped:
            return "stopped";
        case Status::Paused:
            return "paused";
    }
    return "unknown";
}

std::optional<Status> parse_status(std::string_view s) {
    for (Status st :
         {Status::Creating, Status::Created, Status::Running, Status::Stopped, Status::Paused})
        if (status_name(st) == s) return st;
    return std::nullopt;
}

void validate_container_id(std::string_view id) {
    const auto bad = [&](const std::string& why) {
        throw std::invalid_argument("invalid container id " + json_quote(id) + ": " + why);
    };
    if (id.empty()) bad("must not be empty");
    if (id.size() > kMaxIdLength)
        bad("longer than " + std::to_string(kMaxIdLength) + " characters");
    if (id == "." || id == "..") bad("must not be \".\" or \"..\"");
    for (const char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '+' || c == '-' || c == '.';
        if (!ok) bad("only letters, digits, '_', '+', '-' and '.' are allowed");
    }
}

std::string default_state_root() {
    if (::geteuid() != 0) {
        const char* xdg = std::getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg) return std::string(xdg) + "/vessel";
    }
    return "/run/vessel";
}

std::string format_rfc3339_nano(int64_t seconds, long nanoseconds) {
    const time_t t = static_cast<time_t>(seconds);
    struct tm tm {};
    ::gmtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string out = buf;
    if (nanoseconds > 0 && nanoseconds < 1000000000) {
        char frac[32];
        std::snprintf(frac, sizeof frac, ".%09ld", nanoseconds);
        std::string f = frac;
        while (f.back() == '0') f.pop_back();
        out += f;
    }
    return out + "Z";
}

std::string rfc3339_nano_now() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return format_rfc3339_nano(ts.tv_sec, ts.tv_nsec);
}

std::string current_owner() {
    const uid_t uid = ::geteuid();
    struct passwd pw {};
    struct passwd* result = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &result) == 0 && result)
        return result->pw_name;
    return "#" + std::to_string(uid);
}

std::optional<ProcStat> read_proc_stat(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    const auto text = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!text) return std::nullopt;
    // "PID (comm) S ..." where comm may hold spaces and parentheses: fields start after the
    // last ')'. Field 3 is the state, field 22 the start time.
    const auto close = text->rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::vector<std::string_view> fields;
    std::string_view rest(*text);
    rest.remove_prefix(close + 1);
    size_t pos = 0;
    while (pos < rest.size() && fields.size() < 20) {
        while (pos < rest.size() && rest[pos] == ' ') ++pos;
        const size_t start = pos;
        while (pos < rest.size() && rest[pos] != ' ' && rest[pos] != '\n') ++pos;
        if (pos > start) fields.push_back(rest.substr(start, pos - start));
        if (pos < rest.size() && rest[pos] == '\n') break;
    }
    if (fields.size() < 20 || fields[0].size() != 1) return std::nullopt;
    ProcStat st;
    st.state = fields[0][0];
    uint64_t v = 0;
    for (const char c : fields[19]) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    st.start_time = v;
    return st;
}

bool process_alive(pid_t pid, uint64_t start_time) {
    const auto st = read_proc_stat(pid);
    if (!st) return false;
    if (st->state == 'Z' || st->state == 'X' || st->state == 'x') return false;
    return start_time == 0 || st->start_time == start_time;
}

Status observed_status(const State& s) {
    if (s.status == Status::Stopped || s.pid <= 0) return s.status;
    return process_alive(s.pid, s.pid_start_time) ? s.status : Status::Stopped;
}

std::string runtime_state_json(const State& s) {
    std::string out;
    // runc's `state` leaves the owner empty; `list` fills it in.
    append_container_state(out, s, true, 0, "");
    return out;
}

std::string list_json(const std::vector<State>& states) {
    if (states.empty()) return "null\n";
    std::string out = "[";
    for (size_t i = 0; i < states.size(); ++i) {
        if (i) out += ',';
        append_container_state(out, states[i], false, 0, states[i].owner);
    }
    return out + "]\n";
}

std::string hook_state_json(const State& s) {
    const Status st = observed_status(s);
    std::string out = "{\"ociVersion\":";
    append_go_string(out, s.oci_version);
    out += ",\"id\":";
    append_go_string(out, s.id);
    out += ",\"status\":";
    append_go_string(out, status_name(st));
    if (s.pid > 0 && st != Status::Stopped) out += ",\"pid\":" + std::to_string(s.pid);
    out += ",\"bundle\":";
    append_go_string(out, s.bundle);
    if (!s.annotations.empty()) {
        out += ",\"annotations\":{";
        bool first = true;
        for (const auto& [k, v] : s.annotations) {
            if (!first) out += ',';
            first = false;
            append_go_string(out, k);
            out += ':';
            append_go_string(out, v);
        }
        out += '}';
    }
    return out + "}";
}

std::string to_state_json(const State& s) {
    ordered_json j;
    j["ociVersion"] = s.oci_version;
    j["id"] = s.id;
    j["status"] = std::string(status_name(s.status));
    j["pid"] = s.pid;
    j["pidStartTime"] = s.pid_start_time;
    j["bundle"] = s.bundle;
    j["rootfs"] = s.rootfs;
    j["created"] = s.created;
    j["owner"] = s.owner;
    j["annotations"] = ordered_json::object();
    for (const auto& [k, v] : s.annotations) j["annotations"][k] = v;
    j["vessel"] = ordered_json::parse(s.vessel.is_null() ? std::string("{}") : s.vessel.dump());
    return j.dump(2) + "\n";
}

State from_state_json(std::string_view text, const std::string& origin) {
    json j;
    try {
        j = json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
        throw std::runtime_error(origin + ": not valid JSON: " + e.what());
    }
    const JsonReader r{origin};
    if (!j.is_object()) throw std::runtime_error(origin + ": must be a JSON object");
    State s;
    s.oci_version = r.get_string(j, "ociVersion", "ociVersion").value_or("");
    s.id = r.require(r.get_string(j, "id", "id"), "id");
    const std::string status = r.require(r.get_string(j, "status", "status"), "status");
    const auto st = parse_status(status);
    if (!st) r.fail("status", "unknown status " + json_quote(status));
    s.status = *st;
    s.pid = static_cast<pid_t>(r.get_int(j, "pid", "pid", 0, INT32_MAX).value_or(0));
    s.pid_start_time = r.get_uint(j, "pidStartTime", "pidStartTime", UINT64_MAX).value_or(0);
    s.bundle = r.get_string(j, "bundle", "bundle").value_or("");
    s.rootfs = r.get_string(j, "rootfs", "rootfs").value_or("");
    s.created = r.get_string(j, "created", "created").value_or("");
    s.owner = r.get_string(j, "owner", "owner").value_or("");
    s.annotations =
        r.get_string_map(j, "annotations", "annotations").value_or(decltype(s.annotations){});
    if (const json* v = JsonReader::member(j, "vessel")) {
        r.require_object(*v, "vessel");
        s.vessel = *v;
    }
    return s;
}

State ContainerLock::read() const {
    const std::string path = dir_ + "/state.json";
    const auto text = read_file(path);
    if (!text) throw ContainerNotFound(id_);
    return from_state_json(*text, "container " + id_ + ": state " + path);
}

void ContainerLock::write(const State& s) {
    if (s.id != id_)
        throw std::invalid_argument("state of container " + s.id + " written to container " + id_);
    write_file_atomic(dir_, "state.json", to_state_json(s));
}

StateStore::StateStore(std::string root) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string StateStore::container_dir(std::string_view id) const {
    validate_container_id(id);
    return root_ + "/" + std::string(id);
}

void StateStore::ensure_root() const {
    mkdir_p(root_, 0700);
}

ContainerLock StateStore::create(const State& s) {
    const std::string dir = container_dir(s.id);
    ensure_root();
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0) throw ContainerExists(s.id);

    std::string tmp;
    for (int attempt = 0;; ++attempt) {
        tmp = root_ + "/" + temp_name("new");
        if (::mkdir(tmp.c_str(), 0711) == 0) break;
        if (errno != EEXIST || attempt > 100) throw_errno("creating " + tmp);
    }
    try {
        UniqueFd lock(::open((tmp + "/lock").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!lock) throw_errno("creating " + tmp + "/lock");
        // Taken before the directory is visible, so nobody can act on it before the caller.
        if (::flock(lock.get(), LOCK_EX) < 0) throw_errno("locking " + tmp + "/lock");
        write_file_atomic(tmp, "state.json", to_state_json(s));
        if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_NOREPLACE) < 0) {
            if (errno == EEXIST || errno == ENOTEMPTY) throw ContainerExists(s.id);
            if (errno != EINVAL) throw_errno("renaming " + tmp + " to " + dir);
            // A filesystem without RENAME_NOREPLACE: rename() still refuses a non-empty target.
            if (::rename(tmp.c_str(), dir.c_str()) < 0) {
                if (errno == EEXIST || errno == ENOTEMPTY) throw ContainerExists(s.id);
                throw_errno("renaming " + tmp + " to " + dir);
            }
        }
        fsync_dir(root_);
        return ContainerLock(std::move(lock), s.id, dir);
    } catch (...) {
        remove_tree(tmp);
        throw;
    }
}

State StateStore::load(std::string_view id) const {
    const std::string dir = container_dir(id);
    const std::string path = dir + "/state.json";
    const auto text = read_file(path);
    if (!text) throw ContainerNotFound(id);
    return from_state_json(*text, "container " + std::string(id) + ": state " + path);
}

ContainerLock StateStore::lock(std::string_view id, bool wait) {
    const std::string dir = container_dir(id);
    const std::string path = dir + "/lock";
    for (;;) {
        UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) {
            if (errno == ENOENT || errno == ENOTDIR) throw ContainerNotFound(id);
            throw_errno("opening " + path);
        }
        while (::flock(fd.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
            if (errno != EINTR) throw_errno("locking container " + std::string(id));
        }
        // The container may have been removed (or removed and created again) while we
        // waited: the lock only counts if it is still the file at `path`.
        struct stat held {
        }, now{};
        if (::fstat(fd.get(), &held) < 0) throw_errno("stat " + path);
        if (::stat(path.c_str(), &now) < 0) {
            if (errno == ENOENT || errno == ENOTDIR) throw ContainerNotFound(id);
            throw_errno("stat " + path);
        }
        if (held.st_dev == now.st_dev && held.st_ino == now.st_ino)
            return ContainerLock(std::move(fd), std::string(id), dir);
    }
}

State StateStore::update(std::string_view id, const std::function<void(State&)>& fn) {
    ContainerLock l = lock(id);
    State s = l.read();
    fn(s);
    l.write(s);
    return s;
}

std::vector<std::string> StateStore::list_ids() const {
    std::vector<std::string> ids;
    DIR* d = ::opendir(root_.c_str());
    if (!d) {
        if (errno == ENOENT) return ids;
        throw_errno("listing " + root_);
    }
    while (const struct dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        try {
            validate_container_id(name);
        } catch (const std::invalid_argument&) {
            continue;  // ".", "..", and "@new."/"@rm." entries in flight
        }
        struct stat st {};
        if (::lstat((root_ + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode))
            ids.push_back(name);
    }
    ::closedir(d);
    std::sort(ids.begin(), ids.end());
    return ids;
}

std::vector<State> StateStore::list(std::vector<std::string>* problems) const {
    std::vector<State> out;
    for (const auto& id : list_ids()) {
        try {
            out.push_back(load(id));
        } catch (const ContainerNotFound&) {
            // Deleted while we listed.
        } catch (const std::exception& e) {
            if (problems) problems->push_back(e.what());
        }
    }
    return out;
}

bool StateStore::remove(std::string_view id) {
    validate_container_id(id);
    std::optional<ContainerLock> held;
    try {
        held.emplace(lock(id));
    } catch (const ContainerNotFound&) {
        return false;
    }
    remove(std::move(*held));
    return true;
}

void StateStore::remove(ContainerLock&& lock) {
    const ContainerLock held = std::move(lock);
    const std::string tomb = root_ + "/" + temp_name("rm");
    if (::rename(held.dir().c_str(), tomb.c_str()) < 0)
        throw_errno("removing container " + held.id());
    fsync_dir(root_);
    remove_tree(tomb);
}

}  // namespace vessel::oci
