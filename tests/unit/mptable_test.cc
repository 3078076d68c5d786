// The MP table, parsed here independently per Intel MultiProcessor Specification 1.4
// (chapter 4: floating pointer structure, configuration table header, base table entries).
#include "vmm/mptable.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace vessel::vmm {
namespace {

struct Processor {
    uint8_t apic_id, apic_version, flags;
    uint32_t signature, features;
};
struct MpBus {
    uint8_t id;
    std::string type;
};
struct IoApic {
    uint8_t id, version, flags;
    uint32_t addr;
};
struct IntEntry {  // I/O and local interrupt assignment entries share a layout
    uint8_t int_type;
    uint16_t flags;
    uint8_t src_bus, src_irq, dst_id, dst_pin;
};

struct ParsedMp {
    // Floating pointer
    uint32_t config_ptr = 0;
    uint8_t fp_length = 0, fp_rev = 0, feature1 = 0;
    // Config header
    uint16_t base_len = 0, entry_count = 0, ext_len = 0;
    uint8_t rev = 0;
    uint32_t lapic_addr = 0;
    std::string oem, product;
    // Entries, in table order
    std::vector<uint8_t> types;
    std::vector<Processor> cpus;
    std::vector<MpBus> buses;
    std::vector<IoApic> ioapics;
    std::vector<IntEntry> ioints, lints;
    size_t parsed_bytes = 0;  // bytes of entries consumed
};

uint16_t le16(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] | p[1] << 8);
}
uint32_t le32(const uint8_t* p) {
    return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
}
uint8_t sum8(const uint8_t* p, size_t n) {
    uint8_t s = 0;
    for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + p[i]);
    return s;
}

// Parses a table that will be placed at guest-physical `base`; fails the test on any
// structural violation.
ParsedMp parse(const std::vector<uint8_t>& t, uint64_t base) {
    ParsedMp m;
    EXPECT_GE(t.size(), 16u);
    if (t.size() < 16) return m;
    const uint8_t* fp = t.data();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(fp), 4), "_MP_");
    EXPECT_EQ(sum8(fp, 16), 0) << "floating pointer checksum";
    m.config_ptr = le32(fp + 4);
    m.fp_length = fp[8];
    m.fp_rev = fp[9];
    m.feature1 = fp[11];

    EXPECT_GE(m.config_ptr, base);
    uint64_t off = m.config_ptr - base;
    EXPECT_LE(off + 44, t.size()) << "config table header outside the table";
    if (m.config_ptr < base || off + 44 > t.size()) return m;
    const uint8_t* h = t.data() + off;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(h), 4), "PCMP");
    m.base_len = le16(h + 4);
    m.rev = h[6];
    m.oem.assign(reinterpret_cast<const char*>(h + 8), 8);
    m.product.assign(reinterpret_cast<const char*>(h + 16), 12);
    m.entry_count = le16(h + 34);
    m.lapic_addr = le32(h + 36);
    m.ext_len = le16(h + 40);
    EXPECT_LE(off + m.base_len, t.size()) << "base table runs past the buffer";
    if (off + m.base_len > t.size()) return m;
    EXPECT_EQ(sum8(h, m.base_len), 0) << "configuration table checksum";

    size_t pos = 44;
    while (pos < m.base_len) {
        const uint8_t* e = h + pos;
        uint8_t type = e[0];
        m.types.push_back(type);
        size_t len = type == 0 ? 20 : 8;
        if (type > 4) {
            ADD_FAILURE() << "unknown entry type " << int{type} << " at " << pos;
            return m;
        }
        if (pos + len > m.base_len) {
            ADD_FAILURE() << "entry at " << pos << " runs past the base table";
            return m;
        }
        switch (type) {
            case 0:
                m.cpus.push_back({e[1], e[2], e[3], le32(e + 4), le32(e + 8)});
                EXPECT_EQ(le32(e + 12), 0u);  // reserved
                EXPECT_EQ(le32(e + 16), 0u);
                break;
            case 1:
                m.buses.push_back({e[1], std::string(reinterpret_cast<const char*>(e + 2), 6)});
                break;
            case 2:
                m.ioapics.push_back({e[1], e[2], e[3], le32(e + 4)});
                break;
            case 3:
            case 4: {
                IntEntry ie{e[1], le16(e + 2), e[4], e[5], e[6], e[7]};
                (type == 3 ? m.ioints : m.lints).push_back(ie);
                break;
            }
        }
        pos += len;
    }
    m.parsed_bytes = pos - 44;
    return m;
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MpTableTest, FloatingPointerAndHeader) {
    const uint32_t n = GetParam();
    auto t = build_mptable(n);
    ParsedMp m = parse(t, kMpTableAddr);
    EXPECT_EQ(m.fp_length, 1) << "length is in 16-byte paragraphs";
    EXPECT_EQ(m.fp_rev, 4) << "spec 1.4";
    EXPECT_EQ(m.feature1, 0) << "0 = configuration table present, no default config";
    EXPECT_EQ(m.rev, 4);
    EXPECT_EQ(m.lapic_addr, layout::kLapicAddr);
    EXPECT_EQ(m.ext_len, 0);
    // The table fits in the BIOS area Linux scans and the floating pointer is 16-byte aligned.
    EXPECT_EQ(kMpTableAddr, 0xf0000u);
    EXPECT_EQ(kMpTableAddr % 16, 0u);
    EXPECT_LE(kMpTableAddr + t.size(), 0x100000u);
    // Nothing but the floating pointer and the config table.
    EXPECT_EQ(m.config_ptr - kMpTableAddr + m.base_len, t.size());
}

TEST_P(MpTableTest, EntryCountAndLengthMatchParsedEntries) {
    const uint32_t n = GetParam();
    ParsedMp m = parse(build_mptable(n), kMpTableAddr);
    EXPECT_EQ(m.entry_count, m.types.size());
    EXPECT_EQ(m.parsed_bytes + 44, m.base_len);
    // Spec 4.3: entries are ordered by type.
    for (size_t i = 1; i < m.types.size(); ++i) EXPECT_LE(m.types[i - 1], m.types[i]) << i;
    // 1 bus + 1 IOAPIC + 24 I/O interrupts + 2 local interrupts besides the processors.
    EXPECT_EQ(m.entry_count, n + 28);
    EXPECT_EQ(m.base_len, 44 + 20 * n + 8 * 28);
}

TEST_P(MpTableTest, Processors) {
    const uint32_t n = GetParam();
    ParsedMp m = parse(build_mptable(n), kMpTableAddr);
    ASSERT_EQ(m.cpus.size(), n);
    std::set<uint32_t> ids;
    for (size_t i = 0; i < m.cpus.size(); ++i) {
        const Processor& p = m.cpus[i];
        ids.insert(p.apic_id);
        EXPECT_TRUE(p.flags & 0x1) << "cpu " << i << " not enabled";
        EXPECT_EQ((p.flags & 0x2) != 0, p.apic_id == 0) << "BSP flag on apic id " << int{p.apic_id};
        EXPECT_GE(p.apic_version, 0x10) << "integrated local APIC";
        EXPECT_TRUE(p.features & (1u << 9)) << "APIC feature bit";
    }
    ASSERT_EQ(ids.size(), n) << "duplicate APIC ids";
    EXPECT_EQ(*ids.begin(), 0u);
    EXPECT_EQ(*ids.rbegin(), n - 1);
    EXPECT_TRUE(m.cpus[0].flags & 0x2) << "first processor entry is the BSP";
}

TEST_P(MpTableTest, BusAndIoApic) {
    const uint32_t n = GetParam();
    ParsedMp m = parse(build_mptable(n), kMpTableAddr);
    ASSERT_EQ(m.buses.size(), 1u);
    EXPECT_EQ(m.buses[0].type, "ISA   ");
    ASSERT_EQ(m.ioapics.size(), 1u);
    EXPECT_EQ(m.ioapics[0].id, n) << "IOAPIC id follows the LAPIC ids";
    EXPECT_TRUE(m.ioapics[0].flags & 0x1);
    EXPECT_EQ(m.ioapics[0].addr, 0xfec00000u);
    for (const auto& c : m.cpus) EXPECT_NE(c.apic_id, m.ioapics[0].id);
}

TEST_P(MpTableTest, InterruptRouting) {
    const uint32_t n = GetParam();
    ParsedMp m = parse(build_mptable(n), kMpTableAddr);
    ASSERT_EQ(m.buses.size(), 1u);
    ASSERT_EQ(m.ioapics.size(), 1u);
    ASSERT_EQ(m.ioints.size(), 24u);
    std::set<uint8_t> pins;
    for (const auto& e : m.ioints) {
        EXPECT_EQ(e.int_type, 0) << "vectored INT";
        EXPECT_EQ(e.src_bus, m.buses[0].id);
        EXPECT_EQ(e.dst_id, m.ioapics[0].id);
        EXPECT_EQ(e.src_irq, e.dst_pin) << "identity routing";
        EXPECT_LT(e.dst_pin, layout::kIoapicPins);
        pins.insert(e.dst_pin);
    }
    EXPECT_EQ(pins.size(), 24u) << "every IOAPIC pin routed once";
    // COM1 is reachable.
    EXPECT_TRUE(pins.count(layout::kCom1Irq));

    ASSERT_EQ(m.lints.size(), 2u);
    EXPECT_EQ(m.lints[0].int_type, 3) << "ExtINT";
    EXPECT_EQ(m.lints[0].dst_pin, 0) << "LINT0";
    EXPECT_EQ(m.lints[1].int_type, 1) << "NMI";
    EXPECT_EQ(m.lints[1].dst_pin, 1) << "LINT1";
    for (const auto& l : m.lints) EXPECT_EQ(l.dst_id, 0xff) << "all local APICs";
}

INSTANTIATE_TEST_SUITE_P(Counts, MpTableTest, ::testing::Values(1u, 2u, 32u, 128u));

TEST(MpTableLimits, ZeroAndTooManyCpusThrow) {
    EXPECT_THROW(build_mptable(0), std::invalid_argument);
    EXPECT_THROW(build_mptable(kMaxVcpus + 1), std::invalid_argument);
    EXPECT_EQ(kMaxVcpus, 128u);
    EXPECT_NO_THROW(build_mptable(kMaxVcpus));
}

TEST(MpTableLimits, PointerFollowsPlacementAddress) {
    const uint64_t base = 0xf8000;
    auto t = build_mptable(4, base);
    ParsedMp m = parse(t, base);
    EXPECT_EQ(m.cpus.size(), 4u);
    EXPECT_EQ(m.config_ptr, base + 16);
}

// Linux's smp_scan_config: walk 16-byte boundaries of 0xf0000..0x100000 looking for "_MP_"
// with length 1 and a valid checksum, then follow the pointer in guest memory.
TEST(MpTableLimits, FoundByBiosAreaScanInGuestMemory) {
    auto mem = GuestMemory::create(2 << 20);
    auto t = build_mptable(3);
    ASSERT_TRUE(mem.write(kMpTableAddr, t.data(), t.size()));
    uint64_t found = 0;
    for (uint64_t a = 0xf0000; a < 0x100000; a += 16) {
        uint8_t fp[16];
        ASSERT_TRUE(mem.read(a, fp, sizeof fp));
        if (std::memcmp(fp, "_MP_", 4) == 0 && fp[8] == 1 && sum8(fp, 16) == 0) {
            found = a;
            break;
        }
    }
    ASSERT_EQ(found, kMpTableAddr);
    uint32_t cfg = 0;
    ASSERT_TRUE(mem.read_obj(found + 4, cfg));
    uint8_t hdr[44];
    ASSERT_TRUE(mem.read(cfg, hdr, sizeof hdr));
    EXPECT_EQ(std::memcmp(hdr, "PCMP", 4), 0);
    std::vector<uint8_t> table(le16(hdr + 4));
    ASSERT_TRUE(mem.read(cfg, table.data(), table.size()));
    EXPECT_EQ(sum8(table.data(), table.size()), 0);
}

}  // namespace
}  // namespace vessel::vmm
