#include "snapshot/machine_codec.h"

#include <cstring>
#include <map>
#include <string>

#include "snapshot/format.h"

namespace vessel::snapshot {
namespace {

enum Tag : uint32_t {
    kCpuid = 1,
    kRegs = 2,
    kSregs = 3,
    kXsave = 4,
    kFpu = 5,
    kXcrs = 6,
    kMsrs = 7,
    kLapic = 8,
    kEvents = 9,
    kDebugregs = 10,
    kMpState = 11,
    kTscKhz = 12,
    kPicMaster = 32,
    kPicSlave = 33,
    kIoapic = 34,
    kPit = 35,
    kClock = 36,
};

struct Writer {
    std::vector<uint8_t> out;
    void raw(uint32_t tag, const void* p, size_t n) {
        uint32_t hdr[2] = {tag, static_cast<uint32_t>(n)};
        auto* h = reinterpret_cast<const uint8_t*>(hdr);
        out.insert(out.end(), h, h + sizeof hdr);
        auto* b = static_cast<const uint8_t*>(p);
        out.insert(out.end(), b, b + n);
    }
    template <typename T>
    void obj(uint32_t tag, const T& v) {
        raw(tag, &v, sizeof v);
    }
};

// Record tag -> payload; a repeated tag is malformed.
std::map<uint32_t, std::span<const uint8_t>> records(std::span<const uint8_t> b, const char* what) {
    std::map<uint32_t, std::span<const uint8_t>> r;
    size_t at = 0;
    while (at < b.size()) {
        if (b.size() - at < 8) throw SnapshotError(std::string(what) + ": truncated record");
        uint32_t tag, len;
        std::memcpy(&tag, b.data() + at, 4);
        std::memcpy(&len, b.data() + at + 4, 4);
        at += 8;
        if (len > b.size() - at)
            throw SnapshotError(std::string(what) + ": record " + std::to_string(tag) +
                                " overruns the section");
        if (!r.emplace(tag, b.subspan(at, len)).second)
            throw SnapshotError(std::string(what) + ": record " + std::to_string(tag) +
                                " appears twice");
        at += len;
    }
    return r;
}

template <typename T>
void take(const std::map<uint32_t, std::span<const uint8_t>>& r, uint32_t tag, T& out,
          const char* what, const char* name) {
    auto it = r.find(tag);
    if (it == r.end()) throw SnapshotError(std::string(what) + ": no " + name);
    if (it->second.size() != sizeof(T))
        throw SnapshotError(std::string(what) + ": " + name + " is " +
                            std::to_string(it->second.size()) + " bytes, expected " +
                            std::to_string(sizeof(T)));
    std::memcpy(&out, it->second.data(), sizeof(T));
}

}  // namespace

std::vector<uint8_t> encode_vcpu(const vmm::VcpuState& s) {
    Writer w;
    w.raw(kCpuid, s.cpuid.data(), s.cpuid.size() * sizeof(kvm_cpuid_entry2));
    w.obj(kRegs, s.regs);
    w.obj(kSregs, s.sregs);
    if (!s.xsave.empty())
        w.raw(kXsave, s.xsave.data(), s.xsave.size());
    else
        w.obj(kFpu, s.fpu);
    if (s.has_xcrs) w.obj(kXcrs, s.xcrs);
    std::vector<uint8_t> msrs(s.msrs.size() * 16, 0);
    for (size_t i = 0; i < s.msrs.size(); ++i) {
        std::memcpy(&msrs[i * 16], &s.msrs[i].index, 4);
        std::memcpy(&msrs[i * 16 + 8], &s.msrs[i].value, 8);
    }
    w.raw(kMsrs, msrs.data(), msrs.size());
    w.obj(kLapic, s.lapic);
    w.obj(kEvents, s.events);
    w.obj(kDebugregs, s.debugregs);
    w.obj(kMpState, s.mp_state);
    w.obj(kTscKhz, s.tsc_khz);
    return std::move(w.out);
}

vmm::VcpuState decode_vcpu(std::span<const uint8_t> b) {
    const char* what = "vcpu section";
    auto r = records(b, what);
    vmm::VcpuState s;
    auto cpuid = r.find(kCpuid);
    if (cpuid == r.end() || cpuid->second.empty() ||
        cpuid->second.size() % sizeof(kvm_cpuid_entry2) != 0 ||
        cpuid->second.size() / sizeof(kvm_cpuid_entry2) > 256)
        throw SnapshotError("vcpu section: missing or malformed CPUID");
    s.cpuid.resize(cpuid->second.size() / sizeof(kvm_cpuid_entry2));
    std::memcpy(s.cpuid.data(), cpuid->second.data(), cpuid->second.size());
    take(r, kRegs, s.regs, what, "registers");
    take(r, kSregs, s.sregs, what, "special registers");
    if (auto x = r.find(kXsave); x != r.end()) {
        if (x->second.size() < 4096 || x->second.size() > (1u << 20))
            throw SnapshotError("vcpu section: XSAVE image of " + std::to_string(x->second.size()) +
                                " bytes");
        s.xsave.assign(x->second.begin(), x->second.end());
    } else {
        take(r, kFpu, s.fpu, what, "FPU state");
    }
    if (r.count(kXcrs)) {
        take(r, kXcrs, s.xcrs, what, "XCRs");
        s.has_xcrs = true;
    }
    auto m = r.find(kMsrs);
    if (m == r.end() || m->second.size() % 16 != 0 || m->second.size() / 16 > 1024)
        throw SnapshotError("vcpu section: missing or malformed MSRs");
    for (size_t i = 0; i < m->second.size() / 16; ++i) {
        vmm::MsrValue v{};
        std::memcpy(&v.index, m->second.data() + i * 16, 4);
        std::memcpy(&v.value, m->second.data() + i * 16 + 8, 8);
        s.msrs.push_back(v);
    }
    take(r, kLapic, s.lapic, what, "LAPIC");
    take(r, kEvents, s.events, what, "vCPU events");
    take(r, kDebugregs, s.debugregs, what, "debug registers");
    take(r, kMpState, s.mp_state, what, "MP state");
    take(r, kTscKhz, s.tsc_khz, what, "TSC rate");
    return s;
}

std::vector<uint8_t> encode_vm(const vmm::VmState& s) {
    Writer w;
    w.obj(kPicMaster, s.pic_master);
    w.obj(kPicSlave, s.pic_slave);
    w.obj(kIoapic, s.ioapic);
    w.obj(kPit, s.pit);
    w.obj(kClock, s.clock);
    return std::move(w.out);
}

vmm::VmState decode_vm(std::span<const uint8_t> b) {
    const char* what = "vm section";
    auto r = records(b, what);
    vmm::VmState s;
    take(r, kPicMaster, s.pic_master, what, "PIC master");
    take(r, kPicSlave, s.pic_slave, what, "PIC slave");
    take(r, kIoapic, s.ioapic, what, "IOAPIC");
    take(r, kPit, s.pit, what, "PIT");
    take(r, kClock, s.clock, what, "kvmclock");
    return s;
}

nlohmann::json serial_to_json(const vmm::Serial::State& s) {
    return {{"ier", s.ier}, {"iir", s.iir},
            {"lcr", s.lcr}, {"mcr", s.mcr},
            {"lsr", s.lsr}, {"msr", s.msr},
            {"scr", s.scr}, {"dll", s.dll},
            {"dlm", s.dlm}, {"thr_empty_pending", s.thr_empty_pending}};
}

vmm::Serial::State serial_from_json(const nlohmann::json& j) {
    vmm::Serial::State s;
    try {
        s.ier = j.at("ier").get<uint8_t>();
        s.iir = j.at("iir").get<uint8_t>();
        s.lcr = j.at("lcr").get<uint8_t>();
        s.mcr = j.at("mcr").get<uint8_t>();
        s.lsr = j.at("lsr").get<uint8_t>();
        s.msr = j.at("msr").get<uint8_t>();
        s.scr = j.at("scr").get<uint8_t>();
        s.dll = j.at("dll").get<uint8_t>();
        s.dlm = j.at("dlm").get<uint8_t>();
        s.thr_empty_pending = j.at("thr_empty_pending").get<bool>();
    } catch (const nlohmann::json::exception& e) {
        throw SnapshotError(std::string("serial section: ") + e.what());
    }
    return s;
}

}  // namespace vessel::snapshot
