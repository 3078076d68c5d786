// The snapshot file format: round trips, and every way a snapshot file can be bad is refused
// with a message naming the problem (docs/snapshot-format.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "snapshot/crc32c.h"
#include "snapshot/format.h"
#include "snapshot/machine_codec.h"
#include "snapshot/snapshot.h"
#include "vmm/guest_memory.h"

using namespace vessel::snapshot;
using vessel::vmm::MachineState;
using vessel::vmm::VcpuState;

namespace {

std::span<const uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

VcpuState sample_vcpu(uint32_t i) {
    VcpuState v;
    for (uint32_t f = 0; f < 3; ++f) {
        kvm_cpuid_entry2 e{};
        e.function = f;
        e.eax = 0x1000 + f + i;
        v.cpuid.push_back(e);
    }
    v.regs.rip = 0x1000000 + i;
    v.regs.rax = 42;
    v.sregs.cr0 = 0x80000011;
    v.xsave.assign(4096, 0);
    v.xsave[0] = 0x7f;
    v.has_xcrs = true;
    v.xcrs.nr_xcrs = 1;
    v.xcrs.xcrs[0].value = 7;
    v.msrs = {{0x10, 123456789}, {0x4b564d01, 0xabc1}};
    v.lapic.regs[0x20] = static_cast<char>(i);
    v.events.nmi.pending = 1;
    v.debugregs.dr7 = 0x400;
    v.mp_state.mp_state = i ? KVM_MP_STATE_UNINITIALIZED : KVM_MP_STATE_RUNNABLE;
    v.tsc_khz = 2000000;
    return v;
}

Snapshot sample() {
    Snapshot s;
    s.meta = {{"cmdline", "console=ttyS0"}};
    s.machine.vcpus = 2;
    s.machine.memory_size = 128ull << 20;
    s.machine.vcpu = {sample_vcpu(0), sample_vcpu(1)};
    s.machine.vm.pit.channels[0].count = 1193;
    s.machine.vm.clock.clock = 987654321;
    s.machine.vm.ioapic.chip.ioapic.id = 5;
    s.machine.serial.ier = 3;
    s.machine.serial.lcr = 0x1b;
    DeviceRecord d;
    d.slot = 0;
    d.kind = "block";
    d.config = {{"path", "/tmp/disk.img"}, {"read_only", false}};
    d.transport.status = 15;
    d.transport.driver_features = 1ull << 32;
    vessel::virtio::Queue::State q;
    q.max_size = 256;
    q.size = 128;
    q.ready = true;
    q.desc_addr = 0x10000;
    q.next_avail = 17;
    q.next_used = 17;
    d.transport.queues.push_back(q);
    s.devices.push_back(d);
    return s;
}

// Encodes `s` and returns the decode error (empty when it decoded).
std::string decode_error(const std::vector<uint8_t>& b) {
    try {
        decode_snapshot(b);
        return {};
    } catch (const SnapshotError& e) {
        return e.what();
    }
}

void rewrite_header_crc(std::vector<uint8_t>& b) {
    uint32_t c = crc32c({b.data(), 28});
    std::memcpy(b.data() + 28, &c, 4);
}

TEST(SnapshotCrc, KnownVectors) {
    EXPECT_EQ(crc32c(bytes_of("123456789")), 0xe3069283u);
    EXPECT_EQ(crc32c(bytes_of("")), 0u);
    // Incremental equals one-shot, across the 8-byte fast path.
    std::string s = "The quick brown fox jumps over the lazy dog";
    uint32_t part = crc32c(bytes_of(s.substr(0, 13)));
    EXPECT_EQ(crc32c(bytes_of(s.substr(13)), part), crc32c(bytes_of(s)));
}

TEST(SnapshotFormat, RoundTripKeepsEveryField) {
    Snapshot in = sample();
    Snapshot out = decode_snapshot(encode_snapshot(in));
    EXPECT_EQ(out.machine.vcpus, 2u);
    EXPECT_EQ(out.machine.memory_size, 128ull << 20);
    ASSERT_EQ(out.machine.vcpu.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        const VcpuState &a = in.machine.vcpu[i], &b = out.machine.vcpu[i];
        EXPECT_EQ(std::memcmp(&a.regs, &b.regs, sizeof a.regs), 0);
        EXPECT_EQ(std::memcmp(&a.sregs, &b.sregs, sizeof a.sregs), 0);
        EXPECT_EQ(a.xsave, b.xsave);
        EXPECT_TRUE(b.has_xcrs);
        EXPECT_EQ(b.xcrs.xcrs[0].value, 7u);
        ASSERT_EQ(b.msrs.size(), 2u);
        EXPECT_EQ(b.msrs[1].index, 0x4b564d01u);
        EXPECT_EQ(b.msrs[0].value, 123456789u);
        EXPECT_EQ(std::memcmp(&a.lapic, &b.lapic, sizeof a.lapic), 0);
        EXPECT_EQ(b.events.nmi.pending, 1);
        EXPECT_EQ(b.debugregs.dr7, 0x400u);
        EXPECT_EQ(b.mp_state.mp_state, a.mp_state.mp_state);
        EXPECT_EQ(b.tsc_khz, 2000000u);
        ASSERT_EQ(b.cpuid.size(), 3u);
        EXPECT_EQ(b.cpuid[2].eax, a.cpuid[2].eax);
    }
    EXPECT_EQ(out.machine.vm.pit.channels[0].count, 1193u);
    EXPECT_EQ(out.machine.vm.clock.clock, 987654321u);
    EXPECT_EQ(out.machine.vm.ioapic.chip.ioapic.id, 5u);
    EXPECT_EQ(out.machine.serial.ier, 3);
    EXPECT_EQ(out.machine.serial.lcr, 0x1b);
    ASSERT_EQ(out.devices.size(), 1u);
    EXPECT_EQ(out.devices[0].kind, "block");
    EXPECT_EQ(out.devices[0].config["path"], "/tmp/disk.img");
    EXPECT_EQ(out.devices[0].transport, in.devices[0].transport);
    EXPECT_EQ(out.meta["cmdline"], "console=ttyS0");
}

TEST(SnapshotFormat, FpuInsteadOfXsave) {
    Snapshot in = sample();
    for (auto& v : in.machine.vcpu) {
        v.xsave.clear();
        v.fpu.mxcsr = 0x1f80;
        v.has_xcrs = false;
    }
    Snapshot out = decode_snapshot(encode_snapshot(in));
    EXPECT_TRUE(out.machine.vcpu[0].xsave.empty());
    EXPECT_EQ(out.machine.vcpu[0].fpu.mxcsr, 0x1f80u);
    EXPECT_FALSE(out.machine.vcpu[0].has_xcrs);
}

TEST(SnapshotFormat, EveryTruncationIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    for (size_t len = 0; len < b.size(); len += (len < 64 ? 1 : 97)) {
        std::vector<uint8_t> t(b.begin(), b.begin() + static_cast<long>(len));
        std::string err = decode_error(t);
        ASSERT_FALSE(err.empty()) << "a snapshot cut to " << len << " bytes was accepted";
        EXPECT_NE(err.find("truncated"), std::string::npos) << len << ": " << err;
    }
}

TEST(SnapshotFormat, BadMagicIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    b[0] = 'X';
    EXPECT_NE(decode_error(b).find("not a vessel snapshot"), std::string::npos);
}

TEST(SnapshotFormat, WrongVersionIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    uint32_t v = 2;
    std::memcpy(b.data() + 8, &v, 4);
    rewrite_header_crc(b);  // a well-formed file of another version, not a corrupted one
    std::string err = decode_error(b);
    EXPECT_NE(err.find("unsupported snapshot format version 2"), std::string::npos) << err;
}

TEST(SnapshotFormat, CorruptedHeaderIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    b[12] ^= 1;  // section count, without fixing the checksum
    EXPECT_NE(decode_error(b).find("header corrupted"), std::string::npos);
}

TEST(SnapshotFormat, CorruptedTableIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    b[kHeaderSize + 16] ^= 0x40;  // first section's length
    EXPECT_NE(decode_error(b).find("section table corrupted"), std::string::npos);
}

TEST(SnapshotFormat, EveryCorruptedPayloadByteIsRefused) {
    std::vector<uint8_t> good = encode_snapshot(sample());
    auto sections = decode(good);
    size_t payload_start = kHeaderSize + sections.size() * kTableEntrySize;
    size_t flipped = 0;
    for (size_t i = payload_start; i < good.size(); i += 13) {
        std::vector<uint8_t> b = good;
        b[i] ^= 0x10;
        std::string err = decode_error(b);
        if (err.empty()) {
            // Only the alignment padding between sections is not covered by a checksum.
            continue;
        }
        EXPECT_NE(err.find("corrupted (checksum)"), std::string::npos) << i << ": " << err;
        ++flipped;
    }
    EXPECT_GT(flipped, 50u);
}

TEST(SnapshotFormat, CorruptedVcpuSectionNamesIt) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    auto sections = decode(b);
    // Find the vCPU 1 section's payload offset from the table and flip a byte in it.
    for (size_t i = 0; i < sections.size(); ++i) {
        if (sections[i].type != SectionType::kVcpu || sections[i].index != 1) continue;
        uint64_t off;
        std::memcpy(&off, b.data() + kHeaderSize + i * kTableEntrySize + 8, 8);
        b[off + 20] ^= 0xff;
    }
    EXPECT_NE(decode_error(b).find("vcpu section 1 corrupted"), std::string::npos);
}

TEST(SnapshotFormat, TrailingDataIsRefused) {
    std::vector<uint8_t> b = encode_snapshot(sample());
    b.push_back(0);
    EXPECT_NE(decode_error(b).find("trailing data"), std::string::npos);
}

TEST(SnapshotFormat, InconsistentContentsAreRefused) {
    {
        Snapshot s = sample();
        s.machine.vcpu.pop_back();  // meta says 2 vCPUs
        EXPECT_NE(decode_error(encode_snapshot(s)).find("found 1 vCPU sections"),
                  std::string::npos);
    }
    {
        Snapshot s = sample();
        s.memory_file = "../etc/passwd";
        EXPECT_NE(decode_error(encode_snapshot(s)).find("not a plain name"), std::string::npos);
    }
    {
        Snapshot s = sample();
        s.devices.push_back(s.devices[0]);  // two devices in slot 0
        EXPECT_NE(decode_error(encode_snapshot(s)).find("two devices in slot 0"),
                  std::string::npos);
    }
    {
        // A section without its required records: a vm section of only the clock.
        std::vector<Section> secs = decode(encode_snapshot(sample()));
        for (auto& s : secs)
            if (s.type == SectionType::kVm) s.data.resize(8 + sizeof(kvm_irqchip) - 1);
        std::string err = decode_error(encode(secs));
        EXPECT_NE(err.find("vm section"), std::string::npos) << err;
    }
    {
        std::vector<Section> secs = decode(encode_snapshot(sample()));
        std::erase_if(secs, [](const Section& s) { return s.type == SectionType::kSerial; });
        EXPECT_NE(decode_error(encode(secs)).find("no serial section"), std::string::npos);
    }
    {
        std::vector<Section> secs = decode(encode_snapshot(sample()));
        secs.push_back({static_cast<SectionType>(99), 0, {}});
        EXPECT_NE(decode_error(encode(secs)).find("unknown section type 99"), std::string::npos);
    }
}

TEST(SnapshotFormat, WrongStructSizeIsRefusedByName) {
    std::vector<Section> secs = decode(encode_snapshot(sample()));
    for (auto& s : secs) {
        if (s.type != SectionType::kVcpu || s.index != 0) continue;
        // Rebuild the section with a registers record one byte short.
        std::vector<uint8_t> rec(8 + sizeof(kvm_regs) - 1, 0);
        uint32_t tag = 2, len = sizeof(kvm_regs) - 1;
        std::memcpy(rec.data(), &tag, 4);
        std::memcpy(rec.data() + 4, &len, 4);
        VcpuState v = sample_vcpu(0);
        std::vector<uint8_t> full = encode_vcpu(v);
        // Drop the original registers record (the second one, after CPUID).
        size_t cpuid_len = 8 + v.cpuid.size() * sizeof(kvm_cpuid_entry2);
        full.erase(full.begin() + static_cast<long>(cpuid_len),
                   full.begin() + static_cast<long>(cpuid_len + 8 + sizeof(kvm_regs)));
        full.insert(full.end(), rec.begin(), rec.end());
        s.data = full;
    }
    std::string err = decode_error(encode(secs));
    EXPECT_NE(err.find("registers is " + std::to_string(sizeof(kvm_regs) - 1) + " bytes"),
              std::string::npos)
        << err;
}

class SnapshotDir : public ::testing::Test {
  protected:
    void SetUp() override {
        char t[] = "/tmp/vessel-snapfmt-XXXXXX";
        dir_ = ::mkdtemp(t);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    void write_memory(uint64_t size) {
        std::ofstream(dir_ + "/memory").close();
        ASSERT_EQ(::truncate((dir_ + "/memory").c_str(), static_cast<off_t>(size)), 0);
    }
    std::string load_error() {
        try {
            load(dir_);
            return {};
        } catch (const SnapshotError& e) {
            return e.what();
        }
    }
    std::string dir_;
};

TEST_F(SnapshotDir, SaveThenLoad) {
    write_memory(128ull << 20);
    save(dir_, sample());
    Snapshot s = load(dir_);
    EXPECT_EQ(s.machine.vcpus, 2u);
    EXPECT_TRUE(s.meta.contains("created"));
    EXPECT_TRUE(s.meta.contains("vessel_version"));
    EXPECT_EQ(memory_path(dir_, s), dir_ + "/memory");
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/state.vsnap.tmp"));
}

TEST_F(SnapshotDir, MissingOrShortMemoryFileIsRefused) {
    save(dir_, sample());
    EXPECT_NE(load_error().find("memory file"), std::string::npos);
    write_memory(64ull << 20);
    std::string err = load_error();
    EXPECT_NE(err.find("expected " + std::to_string(128ull << 20)), std::string::npos) << err;
}

TEST_F(SnapshotDir, MissingStateOrDirectoryIsRefused) {
    EXPECT_NE(load_error().find("state.vsnap"), std::string::npos);
    std::string missing = dir_ + "/nope";
    try {
        load(missing);
        FAIL();
    } catch (const SnapshotError& e) {
        EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
    }
}

TEST_F(SnapshotDir, TruncatedStateFileIsRefused) {
    write_memory(128ull << 20);
    save(dir_, sample());
    std::string state = dir_ + "/state.vsnap";
    ASSERT_EQ(::truncate(state.c_str(), 100), 0);
    std::string err = load_error();
    EXPECT_NE(err.find("truncated"), std::string::npos) << err;
    EXPECT_NE(err.find(dir_), std::string::npos) << err;
}

// Diff chains without KVM: a base and a diff made by hand, resolved, merged and broken.
class SnapshotChain : public SnapshotDir {
  protected:
    static constexpr uint64_t kSize = 128ull << 20;
    std::string base() { return dir_ + "/base"; }
    std::string diff() { return dir_ + "/diff"; }
    void make(bool with_parent = true) {
        ASSERT_EQ(::mkdir(base().c_str(), 0700), 0);
        ASSERT_EQ(::mkdir(diff().c_str(), 0700), 0);
        // Base memory: page p starts with p + 1. Diff: pages 2 and 9 changed.
        vessel::vmm::GuestMemory m = vessel::vmm::GuestMemory::create(kSize);
        for (uint64_t p = 0; p < 16; ++p) {
            uint64_t v = p + 1;
            ASSERT_TRUE(m.write(p * 4096, &v, 8));
        }
        m.save(base() + "/memory");
        save(base(), sample());
        bitmap_.assign(kSize / 4096 / 64, 0);
        bitmap_[0] = (1ull << 2) | (1ull << 9);
        for (uint64_t p : {2, 9}) {
            uint64_t v = 100 + p;
            ASSERT_TRUE(m.write(p * 4096, &v, 8));
        }
        m.save_pages(diff() + "/memory", bitmap_);
        write_bitmap(diff() + "/" + kBitmapFile, bitmap_);
        Snapshot s = sample();
        s.meta["diff"] = {{"parent", with_parent ? base() : diff()},
                          {"pages", 2},
                          {"bitmap_crc32c", bitmap_crc(bitmap_)}};
        save(diff(), s);
    }
    std::string resolve_error() {
        try {
            resolve(diff());
            return {};
        } catch (const SnapshotError& e) {
            return e.what();
        }
    }
    std::vector<uint64_t> bitmap_;
};

TEST_F(SnapshotChain, ResolveThenMergeGivesTheNewestMemory) {
    make();
    Resolved r = resolve(diff());
    EXPECT_EQ(r.memory_path, base() + "/memory");
    ASSERT_EQ(r.overlays.size(), 1u);
    EXPECT_EQ(r.overlays[0].path, diff() + "/memory");
    EXPECT_EQ(r.overlays[0].bitmap, bitmap_);
    EXPECT_TRUE(r.snap.meta.contains("diff"));

    const std::string out = dir_ + "/merged";
    merge(diff(), out);
    Snapshot s = load(out);
    EXPECT_FALSE(s.meta.contains("diff"));
    vessel::vmm::GuestMemory m = vessel::vmm::GuestMemory::load_file(out + "/memory", kSize);
    for (uint64_t p = 0; p < 16; ++p) {
        uint64_t v = 0;
        ASSERT_TRUE(m.read(p * 4096, &v, 8));
        EXPECT_EQ(v, p == 2 || p == 9 ? 100 + p : p + 1) << "page " << p;
    }
    // A full snapshot resolves to itself; merging into a snapshot is refused.
    EXPECT_TRUE(resolve(base()).overlays.empty());
    EXPECT_THROW(merge(diff(), out), SnapshotError);
}

TEST_F(SnapshotChain, MissingParentIsRefused) {
    make();
    std::filesystem::remove_all(base());
    std::string err = resolve_error();
    EXPECT_NE(err.find("parent"), std::string::npos) << err;
}

TEST_F(SnapshotChain, CorruptedOrShortBitmapIsRefused) {
    make();
    const std::string b = diff() + "/" + kBitmapFile;
    {
        std::fstream f(b, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(100);
        f.put('\x01');
    }
    std::string err = resolve_error();
    EXPECT_NE(err.find("checksum"), std::string::npos) << err;
    ASSERT_EQ(::truncate(b.c_str(), 64), 0);
    err = resolve_error();
    EXPECT_NE(err.find("bytes, expected"), std::string::npos) << err;
}

TEST_F(SnapshotChain, ALoopIsRefused) {
    make(false);  // the diff names itself as parent
    std::string err = resolve_error();
    EXPECT_NE(err.find("loops"), std::string::npos) << err;
}

}  // namespace
