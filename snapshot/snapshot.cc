#include "snapshot/snapshot.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>

#include "snapshot/crc32c.h"
#include "snapshot/machine_codec.h"
#include "vmm/mptable.h"

namespace vessel::snapshot {
namespace {

using nlohmann::json;

std::vector<uint8_t> json_bytes(const json& j) {
    std::string s = j.dump();
    return {s.begin(), s.end()};
}

json parse_json(const Section& s, const char* what) {
    json j = json::parse(s.data.begin(), s.data.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
        throw SnapshotError(std::string(what) + " section is not a JSON object");
    return j;
}

template <typename T>
T field(const json& j, const char* key, const std::string& what) {
    try {
        return j.at(key).get<T>();
    } catch (const json::exception&) {
        throw SnapshotError(what + ": missing or invalid \"" + key + "\"");
    }
}

}  // namespace

json transport_to_json(const virtio::MmioTransport::State& s) {
    json qs = json::array();
    for (const auto& q : s.queues)
        qs.push_back({{"max_size", q.max_size},
                      {"size", q.size},
                      {"ready", q.ready},
                      {"desc_addr", q.desc_addr},
                      {"avail_addr", q.avail_addr},
                      {"used_addr", q.used_addr},
                      {"next_avail", q.next_avail},
                      {"next_used", q.next_used},
                      {"event_idx", q.event_idx},
                      {"indirect", q.indirect}});
    return {{"status", s.status},
            {"device_features_sel", s.device_features_sel},
            {"driver_features_sel", s.driver_features_sel},
            {"driver_features", s.driver_features},
            {"queue_sel", s.queue_sel},
            {"interrupt_status", s.interrupt_status},
            {"config_generation", s.config_generation},
            {"queues", qs}};
}

virtio::MmioTransport::State transport_from_json(const json& j) {
    const std::string what = "device transport";
    virtio::MmioTransport::State s;
    s.status = field<uint32_t>(j, "status", what);
    s.device_features_sel = field<uint32_t>(j, "device_features_sel", what);
    s.driver_features_sel = field<uint32_t>(j, "driver_features_sel", what);
    s.driver_features = field<uint64_t>(j, "driver_features", what);
    s.queue_sel = field<uint32_t>(j, "queue_sel", what);
    s.interrupt_status = field<uint32_t>(j, "interrupt_status", what);
    s.config_generation = field<uint32_t>(j, "config_generation", what);
    auto qs = field<json>(j, "queues", what);
    if (!qs.is_array() || qs.size() > 64) throw SnapshotError(what + ": bad queue list");
    for (const auto& q : qs) {
        virtio::Queue::State x;
        x.max_size = field<uint16_t>(q, "max_size", what);
        x.size = field<uint16_t>(q, "size", what);
        x.ready = field<bool>(q, "ready", what);
        x.desc_addr = field<uint64_t>(q, "desc_addr", what);
        x.avail_addr = field<uint64_t>(q, "avail_addr", what);
        x.used_addr = field<uint64_t>(q, "used_addr", what);
        x.next_avail = field<uint16_t>(q, "next_avail", what);
        x.next_used = field<uint16_t>(q, "next_used", what);
        x.event_idx = field<bool>(q, "event_idx", what);
        x.indirect = field<bool>(q, "indirect", what);
        s.queues.push_back(x);
    }
    return s;
}

std::vector<uint8_t> encode_snapshot(const Snapshot& s) {
    std::vector<Section> sec;
    json meta = s.meta;
    meta["vcpus"] = s.machine.vcpus;
    meta["memory_size"] = s.machine.memory_size;
    sec.push_back({SectionType::kMeta, 0, json_bytes(meta)});
    for (size_t i = 0; i < s.machine.vcpu.size(); ++i)
        sec.push_back(
            {SectionType::kVcpu, static_cast<uint32_t>(i), encode_vcpu(s.machine.vcpu[i])});
    sec.push_back({SectionType::kVm, 0, encode_vm(s.machine.vm)});
    sec.push_back({SectionType::kSerial, 0, json_bytes(serial_to_json(s.machine.serial))});
    for (const auto& d : s.devices)
        sec.push_back({SectionType::kDevice, d.slot,
                       json_bytes({{"kind", d.kind},
                                   {"config", d.config},
                                   {"transport", transport_to_json(d.transport)},
                                   {"state", d.state}})});
    sec.push_back({SectionType::kMemory, 0,
                   json_bytes({{"file", s.memory_file}, {"size", s.machine.memory_size}})});
    return encode(sec);
}

Snapshot decode_snapshot(std::span<const uint8_t> bytes) {
    std::vector<Section> sections = decode(bytes);
    Snapshot s;
    bool meta = false, vm = false, serial = false, memory = false;
    std::set<uint32_t> vcpus, slots;
    std::vector<std::pair<uint32_t, vmm::VcpuState>> vcpu_states;
    uint64_t mem_size = 0;
    for (const auto& sec : sections) {
        switch (sec.type) {
            case SectionType::kMeta:
                if (meta) throw SnapshotError("two meta sections");
                meta = true;
                s.meta = parse_json(sec, "meta");
                s.machine.vcpus = field<uint32_t>(s.meta, "vcpus", "meta section");
                s.machine.memory_size = field<uint64_t>(s.meta, "memory_size", "meta section");
                break;
            case SectionType::kVcpu:
                if (!vcpus.insert(sec.index).second)
                    throw SnapshotError("two sections for vCPU " + std::to_string(sec.index));
                vcpu_states.emplace_back(sec.index, decode_vcpu(sec.data));
                break;
            case SectionType::kVm:
                if (vm) throw SnapshotError("two vm sections");
                vm = true;
                s.machine.vm = decode_vm(sec.data);
                break;
            case SectionType::kSerial:
                if (serial) throw SnapshotError("two serial sections");
                serial = true;
                s.machine.serial = serial_from_json(parse_json(sec, "serial"));
                break;
            case SectionType::kDevice: {
                if (!slots.insert(sec.index).second)
                    throw SnapshotError("two devices in slot " + std::to_string(sec.index));
                json j = parse_json(sec, "device");
                const std::string what = "device section " + std::to_string(sec.index);
                DeviceRecord d;
                d.slot = sec.index;
                d.kind = field<std::string>(j, "kind", what);
                d.config = field<json>(j, "config", what);
                d.transport = transport_from_json(field<json>(j, "transport", what));
                d.state = field<json>(j, "state", what);
                s.devices.push_back(std::move(d));
                break;
            }
            case SectionType::kMemory: {
                if (memory) throw SnapshotError("two memory sections");
                memory = true;
                json j = parse_json(sec, "memory");
                s.memory_file = field<std::string>(j, "file", "memory section");
                mem_size = field<uint64_t>(j, "size", "memory section");
                break;
            }
        }
    }
    if (!meta) throw SnapshotError("no meta section");
    if (!vm) throw SnapshotError("no vm section");
    if (!serial) throw SnapshotError("no serial section");
    if (!memory) throw SnapshotError("no memory section");
    if (s.machine.vcpus == 0 || s.machine.vcpus > vmm::kMaxVcpus)
        throw SnapshotError("meta section: bad vCPU count " + std::to_string(s.machine.vcpus));
    if (vcpu_states.size() != s.machine.vcpus)
        throw SnapshotError("meta says " + std::to_string(s.machine.vcpus) + " vCPUs, found " +
                            std::to_string(vcpu_states.size()) + " vCPU sections");
    s.machine.vcpu.resize(s.machine.vcpus);
    for (auto& [i, st] : vcpu_states) {
        if (i >= s.machine.vcpus)
            throw SnapshotError("vCPU section " + std::to_string(i) + " out of range");
        s.machine.vcpu[i] = std::move(st);
    }
    if (mem_size != s.machine.memory_size || mem_size == 0 || mem_size % (1ull << 20) != 0)
        throw SnapshotError("memory section: size " + std::to_string(mem_size) +
                            " does not match the machine's " +
                            std::to_string(s.machine.memory_size));
    if (s.memory_file.empty() || s.memory_file.find('/') != std::string::npos ||
        s.memory_file == "." || s.memory_file == "..")
        throw SnapshotError("memory section: file name \"" + s.memory_file +
                            "\" is not a plain name");
    std::sort(s.devices.begin(), s.devices.end(),
              [](const DeviceRecord& a, const DeviceRecord& b) { return a.slot < b.slot; });
    for (size_t i = 0; i < s.devices.size(); ++i)
        if (s.devices[i].slot != i)
            throw SnapshotError("device slots are not 0.." + std::to_string(s.devices.size() - 1));
    return s;
}

std::string memory_path(const std::string& dir, const Snapshot& s) {
    return dir + "/" + s.memory_file;
}

void save(const std::string& dir, Snapshot s) {
    s.meta["vessel_version"] = VESSEL_SNAPSHOT_VESSEL_VERSION;
    s.meta["created"] = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    std::vector<uint8_t> bytes = encode_snapshot(s);
    write_file(dir + "/" + kStateFile, bytes);
}

Snapshot load(const std::string& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) < 0)
        throw SnapshotError("snapshot " + dir + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) throw SnapshotError("snapshot " + dir + " is not a directory");
    Snapshot s;
    try {
        s = decode_snapshot(read_file(dir + "/" + kStateFile));
    } catch (const SnapshotError& e) {
        throw SnapshotError("snapshot " + dir + ": " + e.what());
    }
    const std::string mem = memory_path(dir, s);
    if (::stat(mem.c_str(), &st) < 0)
        throw SnapshotError("snapshot " + dir + ": memory file " + mem + ": " +
                            std::strerror(errno));
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != s.machine.memory_size)
        throw SnapshotError("snapshot " + dir + ": memory file " + mem + " is " +
                            std::to_string(st.st_size) + " bytes, expected " +
                            std::to_string(s.machine.memory_size) + " (truncated?)");
    return s;
}

namespace {

// The bitmap as stored: little-endian u64 words.
std::vector<uint8_t> bitmap_bytes(const std::vector<uint64_t>& bitmap) {
    std::vector<uint8_t> bytes(bitmap.size() * 8);
    for (size_t i = 0; i < bitmap.size(); ++i)
        for (int b = 0; b < 8; ++b) bytes[i * 8 + b] = static_cast<uint8_t>(bitmap[i] >> (8 * b));
    return bytes;
}

}  // namespace

void write_bitmap(const std::string& path, const std::vector<uint64_t>& bitmap) {
    write_file(path, bitmap_bytes(bitmap));
}

uint32_t bitmap_crc(const std::vector<uint64_t>& bitmap) {
    return crc32c(bitmap_bytes(bitmap));
}

namespace {

std::vector<uint64_t> read_bitmap(const std::string& dir, const Snapshot& s) {
    const std::string path = dir + "/" + kBitmapFile;
    std::vector<uint8_t> bytes;
    try {
        bytes = read_file(path);
    } catch (const std::exception& e) {
        throw SnapshotError("diff snapshot " + dir + ": " + e.what());
    }
    const uint64_t words = (s.machine.memory_size / vmm::GuestMemory::kPageSize + 63) / 64;
    if (bytes.size() != words * 8)
        throw SnapshotError("diff snapshot " + dir + ": " + kBitmapFile + " is " +
                            std::to_string(bytes.size()) + " bytes, expected " +
                            std::to_string(words * 8));
    std::vector<uint64_t> bitmap(words, 0);
    for (size_t i = 0; i < words; ++i)
        for (int b = 0; b < 8; ++b) bitmap[i] |= uint64_t{bytes[i * 8 + b]} << (8 * b);
    const json& d = s.meta["diff"];
    if (!d.contains("bitmap_crc32c") || !d["bitmap_crc32c"].is_number_unsigned() ||
        d["bitmap_crc32c"].get<uint32_t>() != bitmap_crc(bitmap))
        throw SnapshotError("diff snapshot " + dir + ": " + kBitmapFile + " corrupted (checksum)");
    return bitmap;
}

std::string real_path(const std::string& p) {
    char buf[PATH_MAX];
    if (!::realpath(p.c_str(), buf)) return p;
    return buf;
}

}  // namespace

Resolved resolve(const std::string& dir) {
    constexpr size_t kMaxChain = 64;
    Resolved r;
    r.snap = load(dir);
    std::vector<std::pair<std::string, Snapshot>> diffs;  // newest first
    std::set<std::string> seen{real_path(dir)};
    std::string at = dir;
    Snapshot cur = r.snap;
    while (cur.meta.contains("diff")) {
        const json& d = cur.meta["diff"];
        if (!d.is_object() || !d.contains("parent") || !d["parent"].is_string() ||
            d["parent"].get<std::string>().empty())
            throw SnapshotError("diff snapshot " + at + ": no parent in its meta");
        std::string parent = d["parent"];
        if (parent.front() != '/') parent = at + "/" + parent;
        if (!seen.insert(real_path(parent)).second || diffs.size() >= kMaxChain)
            throw SnapshotError("diff snapshot " + dir + ": its chain of parents loops or is " +
                                "longer than " + std::to_string(kMaxChain));
        diffs.emplace_back(at, cur);
        Snapshot p;
        try {
            p = load(parent);
        } catch (const SnapshotError& e) {
            throw SnapshotError("diff snapshot " + at + ": parent: " + e.what());
        }
        if (p.machine.memory_size != cur.machine.memory_size)
            throw SnapshotError("diff snapshot " + at + ": parent " + parent +
                                " has a different memory size");
        at = parent;
        cur = std::move(p);
    }
    r.memory_path = memory_path(at, cur);
    for (auto it = diffs.rbegin(); it != diffs.rend(); ++it)
        r.overlays.push_back(
            {memory_path(it->first, it->second), read_bitmap(it->first, it->second)});
    return r;
}

uint64_t merge(const std::string& dir, const std::string& out) {
    Resolved r = resolve(dir);
    bool made = false;
    if (::mkdir(out.c_str(), 0700) == 0)
        made = true;
    else if (errno != EEXIST)
        throw SnapshotError("creating snapshot directory " + out + ": " + std::strerror(errno));
    else if (::access((out + "/" + kStateFile).c_str(), F_OK) == 0)
        throw SnapshotError(out + " already holds a snapshot (remove it first)");
    const std::string mem = out + "/" + kMemoryFile;
    try {
        vmm::GuestMemory m = vmm::GuestMemory::load_file(r.memory_path, r.snap.machine.memory_size);
        for (const auto& o : r.overlays) m.overlay(o.path, o.bitmap);
        const uint64_t written = m.save(mem);
        Snapshot s = std::move(r.snap);
        s.meta.erase("diff");
        s.meta["merged_from"] = real_path(dir);
        // Disk copies stay with the snapshot that made them; OUT holds memory and state only.
        for (auto& d : s.devices) d.config.erase("copy");
        s.memory_file = kMemoryFile;
        save(out, std::move(s));
        return written;
    } catch (...) {
        ::unlink((out + "/" + kStateFile).c_str());
        ::unlink(mem.c_str());
        if (made) ::rmdir(out.c_str());
        throw;
    }
}

}  // namespace vessel::snapshot
