// BlockCore end to end: descriptor chains in guest memory -> engine -> file -> status bytes
// and used lengths, with both engines.
#include <gtest/gtest.h>
#include <linux/virtio_blk.h>
#include <poll.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "tests/unit/virtio_block_test_util.h"
#include "virtio/block/block_core.h"
#include "virtio/block/disk.h"
#include "virtio/block/engine.h"

namespace vessel::virtio::block {
namespace {

using testing::ChainBuilder;
using testing::fnv1a;
using testing::random_bytes;
using testing::TempFile;

constexpr size_t kDiskSize = 4 << 20;

class CoreTest : public ::testing::TestWithParam<EnginePreference> {
  protected:
    void SetUp() override {
        if (GetParam() == EnginePreference::IoUring && !probe_io_uring().ok)
            GTEST_SKIP() << probe_io_uring().reason;
        contents = random_bytes(kDiskSize, 11);
        file.write_all(0, contents.data(), kDiskSize);
    }
    void open(bool read_only = false, size_t max_in_flight = 1024) {
        disk = std::make_unique<Disk>(Disk::open(testing::disk_opts(file.path(), read_only)));
        int fds[] = {disk->fd()};
        engine = make_engine(GetParam(), 64, fds).engine;
        BlockCoreOptions o;
        o.max_in_flight = max_in_flight;
        o.log = [this](const std::string& l) { logs.push_back(l); };
        core = std::make_unique<BlockCore>(mem, *disk, *engine, o);
    }
    // Runs process_completions until `n` chains are reported; returns head -> used_len.
    std::map<uint16_t, uint32_t> complete(size_t n) {
        std::map<uint16_t, uint32_t> used;
        auto cb = [&](uint16_t h, uint32_t len) { EXPECT_TRUE(used.emplace(h, len).second); };
        core->process_completions(cb);
        while (used.size() < n) {
            pollfd p{core->completion_fd(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) {
                ADD_FAILURE() << "timed out";
                break;
            }
            core->process_completions(cb);
        }
        EXPECT_EQ(core->in_flight(), 0u);
        return used;
    }
    uint32_t run_one(DescriptorChain c) {
        uint16_t head = c.head;
        core->handle(c);
        return complete(1).at(head);
    }

    TempFile file{kDiskSize};
    std::vector<uint8_t> contents;
    vmm::GuestMemory mem = vmm::GuestMemory::create(16 << 20);
    ChainBuilder b{mem};
    std::unique_ptr<Disk> disk;
    std::unique_ptr<IoEngine> engine;
    std::unique_ptr<BlockCore> core;
    std::vector<std::string> logs;
};

TEST_P(CoreTest, WriteThenReadBack) {
    open();
    std::vector<uint8_t> data = random_bytes(8192, 12);
    b.header(VIRTIO_BLK_T_OUT, 10).out(data.data(), 4096).out(data.data() + 4096, 4096).status();
    EXPECT_EQ(run_one(b.take(3)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(file.read_all(10 * 512, 8192), data);

    b.header(VIRTIO_BLK_T_IN, 10).in(512).in(7680).status();
    DescriptorChain c = b.take(4);
    EXPECT_EQ(run_one(c), 8192u + 1);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    std::vector<uint8_t> back(8192);
    mem.read(c.descs[1].addr, back.data(), 512);
    mem.read(c.descs[2].addr, back.data() + 512, 7680);
    EXPECT_EQ(back, data);
    EXPECT_EQ(core->counters().reads, 1u);
    EXPECT_EQ(core->counters().writes, 1u);
    EXPECT_EQ(core->counters().read_bytes, 8192u);
    EXPECT_TRUE(logs.empty());
}

TEST_P(CoreTest, FlushAndGetId) {
    open();
    b.header(VIRTIO_BLK_T_FLUSH, 0).status();
    EXPECT_EQ(run_one(b.take(1)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(core->counters().flushes, 1u);

    b.header(VIRTIO_BLK_T_GET_ID, 0).in(20).status();
    DescriptorChain c = b.take(2);
    EXPECT_EQ(run_one(c), 21u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    std::array<uint8_t, kIdBytes> id;
    mem.read(c.descs[1].addr, id.data(), kIdBytes);
    EXPECT_EQ(id, disk->id());

    b.header(VIRTIO_BLK_T_GET_ID, 0).in(6).in(100).status();  // split, oversized buffer
    c = b.take(3);
    EXPECT_EQ(run_one(c), 21u);
    std::array<uint8_t, kIdBytes> id2;
    mem.read(c.descs[1].addr, id2.data(), 6);
    mem.read(c.descs[2].addr, id2.data() + 6, 14);
    EXPECT_EQ(id2, disk->id());
    uint8_t after = 0;
    mem.read(c.descs[2].addr + 14, &after, 1);
    EXPECT_EQ(after, 0xee);  // nothing written past the id
}

TEST_P(CoreTest, DiscardAndWriteZeroes) {
    open();
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(8, 8, 0).segment(100, 3, 0).status();
    EXPECT_EQ(run_one(b.take(1)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0)
        .segment(200, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
        .segment(301, 5, 0)
        .status();
    EXPECT_EQ(run_one(b.take(2)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    for (auto [s, n] : {std::pair{8, 8}, {100, 3}, {200, 16}, {301, 5}})
        std::memset(contents.data() + s * 512, 0, n * 512);
    EXPECT_EQ(file.read_all(0, kDiskSize), contents);
    EXPECT_EQ(core->counters().discards, 1u);
    EXPECT_EQ(core->counters().write_zeroes, 1u);
}

TEST_P(CoreTest, ReadOnlyDiskRefusesWrites) {
    open(/*read_only=*/true);
    const uint64_t before = fnv1a(file.read_all(0, kDiskSize));
    std::vector<uint8_t> data(4096, 0x77);
    b.header(VIRTIO_BLK_T_OUT, 0).out(data.data(), 4096).status();
    EXPECT_EQ(run_one(b.take(1)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_IOERR);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 8, 0).status();
    EXPECT_EQ(run_one(b.take(2)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_UNSUPP);  // DISCARD is not offered on a RO disk
    b.header(VIRTIO_BLK_T_IN, 0).in(4096).status();
    EXPECT_EQ(run_one(b.take(3)), 4097u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    b.header(VIRTIO_BLK_T_FLUSH, 0).status();
    EXPECT_EQ(run_one(b.take(4)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_OK);
    EXPECT_EQ(fnv1a(file.read_all(0, kDiskSize)), before);
    EXPECT_EQ(core->counters().count(RequestError::ReadOnly), 1u);
    EXPECT_EQ(core->counters().count(RequestError::Unsupported), 1u);
}

TEST_P(CoreTest, BadRequestsGetStatusCounterAndLog) {
    open();
    b.header(VIRTIO_BLK_T_IN, kDiskSize / 512).in(512).status();  // past the end
    EXPECT_EQ(run_one(b.take(1)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_IOERR);
    b.header(99, 0).in(512).status();
    EXPECT_EQ(run_one(b.take(2)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_UNSUPP);
    b.header(VIRTIO_BLK_T_FLUSH, 0);  // no writable byte for a status: used_len 0
    EXPECT_EQ(run_one(b.take(3)), 0u);
    EXPECT_EQ(core->counters().count(RequestError::OutOfRange), 1u);
    EXPECT_EQ(core->counters().count(RequestError::Unsupported), 1u);
    EXPECT_EQ(core->counters().count(RequestError::NoStatus), 1u);
    ASSERT_EQ(logs.size(), 3u);
    EXPECT_NE(logs[0].find("past the end"), std::string::npos) << logs[0];

    // A flood is rate limited: 10 lines at once, the rest counted.
    for (uint16_t h = 0; h < 200; ++h) {
        b.header(99, 0).status();
        core->handle(b.take(h));
    }
    EXPECT_EQ(complete(200).size(), 200u);
    EXPECT_LE(logs.size(), 3u + 10u);
    EXPECT_GE(core->counters().log_suppressed, 200u - 10u);
    EXPECT_EQ(core->counters().count(RequestError::Unsupported), 201u);
}

TEST_P(CoreTest, HostIoErrorBecomesIoerr) {
    open();
    ASSERT_EQ(::ftruncate(file.fd(), 4096), 0);  // the image shrinks under the VM
    b.header(VIRTIO_BLK_T_IN, 64).in(4096).status();
    EXPECT_EQ(run_one(b.take(1)), 1u);
    EXPECT_EQ(b.status_byte(), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(core->counters().io_errors, 1u);
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_NE(logs[0].find("I/O error"), std::string::npos) << logs[0];
}

TEST_P(CoreTest, InFlightCap) {
    open(false, 2);
    for (uint16_t h = 0; h < 3; ++h) {
        b.header(VIRTIO_BLK_T_IN, h).in(512).status();
        core->handle(b.take(h));
    }
    uint64_t third_status = b.status_gpa();
    auto used = complete(3);
    EXPECT_EQ(used.at(0), 513u);
    EXPECT_EQ(used.at(1), 513u);
    EXPECT_EQ(used.at(2), 1u);
    uint8_t s = 0xff;
    mem.read(third_status, &s, 1);
    EXPECT_EQ(s, VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(core->counters().busy, 1u);
}

// Random reads and writes through guest memory, 32 chains at a time (no overlap inside a
// batch): reads match a reference image, and so does the file at the end.
TEST_P(CoreTest, RandomChainsMatchReference) {
    open();
    std::mt19937_64 rng(13);
    for (int round = 0; round < 40; ++round) {
        b.reset();
        struct Pending {
            bool read;
            uint64_t off, len;
            DescriptorChain chain;
        };
        std::vector<Pending> batch;
        std::vector<std::pair<uint64_t, uint64_t>> used_ranges;
        for (uint16_t h = 0; h < 32; ++h) {
            uint64_t sectors = 1 + rng() % 64;
            uint64_t sector = rng() % (kDiskSize / 512 - sectors + 1);
            uint64_t off = sector * 512, len = sectors * 512;
            bool overlap = false;
            for (auto& [o, l] : used_ranges) overlap |= off < o + l && o < off + len;
            if (overlap) continue;
            used_ranges.push_back({off, len});
            bool read = rng() % 2;
            b.header(read ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, sector);
            // Split the data into 1..4 descriptors at sector boundaries.
            std::vector<uint64_t> cuts = {0, len};
            for (int k = rng() % 4; k > 0; --k) cuts.push_back(512 * (rng() % sectors));
            std::sort(cuts.begin(), cuts.end());
            std::vector<uint8_t> data = random_bytes(len, rng());
            for (size_t k = 0; k + 1 < cuts.size(); ++k) {
                uint32_t n = static_cast<uint32_t>(cuts[k + 1] - cuts[k]);
                if (n == 0) continue;
                if (read)
                    b.in(n);
                else
                    b.out(data.data() + cuts[k], n);
            }
            if (!read) std::memcpy(contents.data() + off, data.data(), len);
            b.status();
            batch.push_back({read, off, len, b.take(h)});
        }
        for (auto& p : batch) core->handle(p.chain);
        auto used = complete(batch.size());
        for (auto& p : batch) {
            ASSERT_EQ(used.at(p.chain.head), p.read ? p.len + 1 : 1u);
            uint8_t st = 0xff;
            mem.read(p.chain.descs.back().addr, &st, 1);
            ASSERT_EQ(st, VIRTIO_BLK_S_OK);
            if (!p.read) continue;
            std::vector<uint8_t> got;
            for (const auto& d : p.chain.descs) {
                if (!d.device_writable || d.len == 1) continue;
                size_t at = got.size();
                got.resize(at + d.len);
                mem.read(d.addr, got.data() + at, d.len);
            }
            ASSERT_EQ(got.size(), p.len);
            ASSERT_EQ(0, std::memcmp(got.data(), contents.data() + p.off, p.len));
        }
    }
    EXPECT_EQ(file.read_all(0, kDiskSize), contents);
    EXPECT_TRUE(logs.empty());
}

INSTANTIATE_TEST_SUITE_P(Engines, CoreTest,
                         ::testing::Values(EnginePreference::IoUring, EnginePreference::Sync),
                         [](const auto& info) {
                             return info.param == EnginePreference::IoUring ? "Uring" : "Sync";
                         });

TEST(RateLimitedLog, BurstThenSteady) {
    std::vector<std::string> lines;
    RateLimitedLog log([&](const std::string& l) { lines.push_back(l); }, 3,
                       std::chrono::milliseconds(20));
    for (int i = 0; i < 10; ++i) log.log("x");
    EXPECT_EQ(lines.size(), 3u);
    EXPECT_EQ(log.suppressed(), 7u);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    EXPECT_TRUE(log.log("y"));
    EXPECT_EQ(lines.back(), "y (7 similar lines suppressed)");
}

}  // namespace
}  // namespace vessel::virtio::block
